"""The GRPO trainer loop: sample, score, advantage, update, sync, log — top to bottom.

Everything a step does is visible in `GRPOTrainer.step`; the maths lives in `algorithm.py`, the
optimisation in `learner.py`, generation behind the engine interface, and rewards in `rewards/`.
The learner's first forward pass over a batch gives its log-probs of the tokens the engine sampled
with the weights it was last synced to, so comparing them with the engine's own log-probs verifies
the previous weight sync at no extra cost.

Under `accelerate launch` every process runs this loop on its own share of each step's prompts
(whole groups, so advantages stay local) with its own rollout engine; the learner sums gradients
across processes, metrics are combined across them, and only the main process writes files
(`r1train/distributed.py`).
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch

from r1train import algorithm, distributed
from r1train.async_rollouts import RolloutPrefetcher
from r1train.config import ConfigError, Recipe
from r1train.data import PromptSampler, balance_rows, load_data
from r1train.diagnostics import StallWatch
from r1train.hardware import compute_device
from r1train.heap import map_large_allocations
from r1train.engines import engine_from_recipe
from r1train.seeding import seed_everything
from r1train.threads import set_threads
from r1train.engines.base import SamplingSettings
from r1train.engines.sync_check import step_sync_metrics
from r1train.evaluation import Evaluator, task_metrics
from r1train.learner import PolicyLearner, TrainBatch
from r1train.models import load_model, load_tokenizer, resolve_model_dir, save_model
from r1train.policy_loss import LossSettings
from r1train.prompts import encode_all, prefill
from r1train.run_state import RunState
from r1train.prompt_mix import MixedPromptSampler, tag_sources
from r1train.rollouts import Rollouts, logged_samples, merge, non_finite_samples, select_groups
from r1train.rollouts import engine_logprobs as rollout_logprobs
from r1train.scoring import UnscoredSteps, build_scorer, reward_columns
from r1train.tracking import RunLogger, read_metrics

log = logging.getLogger("r1train")


class GRPOTrainer:
    def __init__(self, recipe: Recipe, run_dir: Path, model_name: str | None = None):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        cfg = recipe
        seed_everything(cfg.seed)
        # Data parallel under `accelerate launch`; None (and a world of one) otherwise.
        self.accelerator = distributed.make_accelerator()
        set_threads(cfg.training.threads)  # after accelerate, which sets its own thread count on CPU
        if cfg.training.cpu_low_memory and not torch.cuda.is_available():
            map_large_allocations()  # freed activations go back to the OS at once (r1train/heap.py)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = distributed.is_main_process()
        if cfg.rollout.prompts_per_step % self.world_size:
            raise ConfigError(f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be a multiple of "
                              f"the number of processes ({self.world_size})")
        if self.world_size > 1 and cfg.rollout.async_generation:
            raise ConfigError("rollout.async_generation runs with one learner process (the background thread "
                              "would interleave collectives with the gradient all-reduce); launch one process "
                              "or turn it off")
        if self.world_size > 1 and cfg.rollout.placement == "remote":
            raise ConfigError("rollout.placement: remote serves one learner process (every process would push "
                              "its weights to the servers); use colocate under a multi-process launch")
        self.model_dir = resolve_model_dir(model_name or cfg.model.name)
        self.tokenizer = load_tokenizer(self.model_dir)
        model = load_model(self.model_dir, cfg.model.gradient_checkpointing)
        if self.accelerator is None:  # one process: its GPU where there is one (a launch's processes are placed by accelerate)
            model.to(compute_device())
        self.learner = PolicyLearner.from_recipe(model, cfg, self.tokenizer.pad_token_id, self.accelerator)
        # beta = 0 loads no reference model at all (its memory and forward passes are saved); with
        # LoRA the reference is the base model under the adapters, so no copy is loaded either.
        self.reference = None
        if cfg.algorithm.beta > 0 and not cfg.model.lora.enabled:
            self.reference = load_model(self.model_dir).eval().requires_grad_(False).to(self.learner.device)
        # Engines report raw (temperature-1) logprobs; the learner scores the tempered distribution
        # it sampled from. They are comparable, for the sync check and TIS, only at temperature 1.
        self.use_engine_logprobs = cfg.rollout.temperature == 1.0
        self.engine = engine_from_recipe(cfg, self.learner.model, self.model_dir, self.tokenizer)
        self.scorer = build_scorer(cfg.rewards, cfg.rollout.max_new_tokens)
        rows = load_data(cfg.data, "train", (cfg.data.question_column,))
        context = getattr(model.config, "max_position_embeddings", None)
        encoded = encode_all(self.tokenizer, rows, cfg.data.question_column, cfg.data.prompt_template,
                             cfg.data.system_prompt, cfg.data.max_prompt_tokens, context, cfg.rollout.max_new_tokens)
        self._prompt_ids = {id(row): ids for row, ids in zip(rows, encoded)}
        drawn = balance_rows(rows, cfg.data.balance_by, cfg.seed) if cfg.data.balance_by else rows
        self.sampler = PromptSampler(drawn, cfg.seed, cfg.data.shuffle)
        if cfg.data.general and cfg.data.general_ratio > 0:
            # Second-stage RL: general prompts join every batch, drawn by a sampler of their own.
            general = tag_sources(rows, load_data(cfg.data, "general", (cfg.data.question_column,)))
            encoded = encode_all(self.tokenizer, general, cfg.data.question_column, cfg.data.prompt_template,
                                 cfg.data.system_prompt, cfg.data.max_prompt_tokens, context,
                                 cfg.rollout.max_new_tokens, what="data.general")
            self._prompt_ids.update({id(row): ids for row, ids in zip(general, encoded)})
            self.sampler = MixedPromptSampler(self.sampler, PromptSampler(general, cfg.seed, cfg.data.shuffle),
                                              cfg.data.general_ratio)
        self.sampling = SamplingSettings(
            max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, stop=list(cfg.rollout.stop),
        )
        self.evaluator = None
        if cfg.data.eval:
            self.evaluator = Evaluator.from_recipe(cfg, self.tokenizer)
        self.state = RunState(self.run_dir)
        self.unscored = UnscoredSteps(cfg.training.max_unscored_steps, cfg.data.answer_column)
        with distributed.main_process_first():  # the main process cleans up a half-written checkpoint
            self.state.clean()
        # Every process reads the checkpoint at once (loading sharded optimiser state is a collective).
        self.step_count = self.state.restore(self.learner, self.sampler)
        # The engine loaded the weights from disk; a resumed learner holds newer ones.
        self.engine.sync_weights(self.learner.model)
        self._engine_step = self.step_count  # the optimiser step whose weights the engine holds
        self.prefetcher = RolloutPrefetcher(self.collect_rollouts, self.sampler) if cfg.rollout.async_generation else None
        self.stall_watch = StallWatch()  # warns once when most groups teach nothing or entropy collapses

    # -----------------------------------------------------------------------------------------
    def train(self) -> Path:
        cfg = self.recipe
        logger = (RunLogger.for_recipe(self.run_dir, cfg, cfg.training.steps, self.step_count) if self.is_main
                  else distributed.NullLogger())
        try:
            if self.step_count == 0 and self.evaluator and cfg.evaluation.at_start:
                logger.log(0, self.evaluate())
            if self._final_evaluation_missing(logger):  # a stop during the last step skipped it
                logger.log(self.step_count, self.evaluate())
            while self.step_count < cfg.training.steps:
                if self.is_main:  # other processes end when the launcher sees the main one stop
                    # Sharded weights cannot be gathered once the other processes are gone: a stop
                    # keeps the last periodic checkpoint.
                    self.state.stop_if_interrupted(self.step_count, self.learner, self._sampler_to_save(),
                                                   save=not self.learner.sharded)
                step = self.step_count + 1
                metrics, samples = self.step()  # advances self.step_count
                if self.evaluator and cfg.evaluation.every and step % cfg.evaluation.every == 0 and step < cfg.training.steps:
                    metrics.update(self.evaluate())
                last = step == cfg.training.steps
                if last and self.evaluator and cfg.evaluation.at_end and not self.state.stop_requested:
                    metrics.update(self.evaluate())
                logger.log(step, metrics)
                for warning in self.stall_watch.update(step, metrics) if self.is_main else ():
                    log.warning(warning)
                if step % cfg.logging.samples_every == 0:
                    logger.log_samples(step, samples)
                logger.progress(step, {"reward": metrics.get("reward/mean"), "acc": metrics.get("accuracy"),
                                       "fmt": metrics.get("format_rate"), "s/step": metrics.get("time/step")})
                due = step % cfg.training.checkpoint_every == 0 or step == cfg.training.steps
                if due and (self.is_main or self.learner.sharded):  # sharded: every process gathers
                    # With background_checkpoints, written while the next step samples; its learner
                    # update waits for the write.
                    self.state.save(step, self.learner, self._sampler_to_save(), cfg.training.keep_checkpoints,
                                    write=self.is_main, background=cfg.training.background_checkpoints)
                if self.is_main:  # a signal during this step, the last one included, stops here
                    self.state.stop_if_interrupted(step, self.learner, self._sampler_to_save(),
                                                   save=not self.learner.sharded)
            self.state.wait_for_checkpoint()  # a failed write stops the run here, with its error
        finally:
            if self.prefetcher:
                self.prefetcher.close()
            logger.close()
            self.state.close()
        final_dir = self.run_dir / "model"
        whole = self.learner.full_model_state()  # sharded: gathered by every process together
        if self.is_main:
            save_model(self.learner.model, self.tokenizer, final_dir, state_dict=whole)
        distributed.barrier()  # no process reports the run finished before the model is saved
        self.engine.close()
        return final_dir

    def _final_evaluation_missing(self, logger) -> bool:
        """A resumed run whose steps are all done, stopped before its end-of-run evaluation."""
        cfg = self.recipe
        if not (self.is_main and self.evaluator and cfg.evaluation.at_end and self.step_count == cfg.training.steps > 0):
            return False
        rows = read_metrics(logger.metrics_path)
        return not (rows and any(key.startswith("eval/") for key in rows[-1]))

    def evaluate(self) -> dict[str, float]:
        """Score the learner's current weights on the held-out set."""
        self._sync_engine()
        return self.evaluator.run(self.engine)

    def _sync_engine(self) -> dict[str, float]:
        """Push the learner's weights into the engine unless it already holds them; returns the
        seconds taken by the engine's wake-up (getting back the memory sleep() released while the
        learner trained) and by the push itself."""
        if self._engine_step == self.step_count:
            return {"time/wake": 0.0, "time/sync": 0.0}
        if self.prefetcher:
            self.prefetcher.wait()  # never swap weights under a batch being sampled
        t0 = time.perf_counter()
        self.engine.wake_up()
        t1 = time.perf_counter()
        self.engine.sync_weights(self.learner.model)
        self._engine_step = self.step_count
        return {"time/wake": t1 - t0, "time/sync": time.perf_counter() - t1}

    def _sampler_to_save(self):
        return self.prefetcher.sampler_for_checkpoint() if self.prefetcher else self.sampler

    # -----------------------------------------------------------------------------------------
    def step(self) -> tuple[dict[str, float], list[dict[str, Any]]]:
        cfg = self.recipe
        t_step = time.perf_counter()
        step = self.step_count + 1
        timings: dict[str, float] = {}

        # 1. Sample G completions per prompt (and, with dynamic sampling, keep drawing prompts
        #    until the batch holds enough groups whose rewards differ). In async mode the batch was
        #    sampled in the background during the previous step, and the next one starts now.
        rollouts = self.next_rollouts(step, timings)
        completions = rollouts.completions
        G = cfg.rollout.group_size
        judged = any(v is not None for values in rollouts.per_function.values() for v in values)
        # All None (e.g. an empty answer column): nothing trains; warn, and stop when it goes on.
        self.unscored.check(not distributed.all_ranks(not judged), step, rollouts.per_function, rollouts.rows)

        # 2. Group-relative advantages from the weighted rewards.
        advantages, adv_metrics = step_advantages(rollouts.rewards, G, cfg.algorithm.advantage_scaling,
                                                  cfg.algorithm.advantage_baseline)
        truncated = torch.tensor([c.truncated for c in completions])

        # 3. Reference log-probs, only when the KL term is on. Samples the engine scored with a
        #    non-finite logprob are left out of the loss: they would make the whole step's loss NaN.
        engine_logprobs = rollout_logprobs(completions) if self.use_engine_logprobs else None
        broken = non_finite_samples(engine_logprobs, len(completions))
        sample_mask = ~truncated if cfg.algorithm.overlong == "mask" else None
        if broken.any():
            log.warning("%d of %d completions came with non-finite engine logprobs; they are left out of "
                        "this step's loss", int(broken.sum()), len(completions))
            sample_mask = ~broken if sample_mask is None else sample_mask & ~broken
        batch = TrainBatch(
            prompt_ids=[c.prompt_token_ids for c in completions],
            completion_ids=[c.token_ids for c in completions],
            advantages=advantages,
            engine_logprobs=engine_logprobs,
            sample_mask=sample_mask,
        )
        t0 = time.perf_counter()
        if cfg.algorithm.beta > 0:
            batch.ref_logprobs = self.learner.compute_logprobs(
                batch.prompt_ids, batch.completion_ids, disable_adapters=self.reference is None, model=self.reference
            )
        timings["time/reference"] = time.perf_counter() - t0

        # 4. Policy update(s). On GPU the engine frees its memory meanwhile (unless it is sampling
        #    the next batch).
        t0 = time.perf_counter()
        self.state.wait_for_checkpoint()  # it reads the weights and optimiser state in place
        timings["time/checkpoint_wait"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if not self.prefetcher:
            self.engine.sleep(weights_stale=True)  # the step ends with a push of the new weights
        learn_metrics = self.learner.train_on_batch(batch, self.loss_settings())
        timings["time/learn"] = time.perf_counter() - t0
        self._check_finite(learn_metrics)
        staleness = self.step_count - rollouts.policy_step  # optimiser steps between sampling and learning
        self.step_count = step  # the learner now holds step `step`'s weights

        # 5. Push the new weights into the engine; the next batch's first pass verifies it. In async
        #    mode this happens at the start of the next step, once the batch in flight is sampled.
        if not self.prefetcher:
            timings.update(self._sync_engine())

        metrics: dict[str, float] = {}
        metrics.update(rollouts.metrics)
        metrics.update(adv_metrics)
        metrics.update(learn_metrics)
        if self.prefetcher:
            metrics["async/staleness"] = staleness
        metrics["rollout/non_finite_logprob_samples"] = int(broken.sum())
        if batch.engine_logprobs is not None and cfg.rollout.verify_sync:
            learner_logprobs = [None if bad else lp for bad, lp in zip(broken.tolist(), self.learner.pre_update_logprobs)]
            sync_metrics, warnings = step_sync_metrics(batch.engine_logprobs, learner_logprobs, staleness,
                                                       [c.worker for c in completions])
            metrics.update(sync_metrics)
            for warning in warnings:
                log.warning(warning)
        lengths = [len(c.token_ids) for c in completions]
        gen_tokens = sum(lengths)
        metrics.update({
            "completion_len/mean": sum(lengths) / len(lengths),
            "completion_len/max": max(lengths),
            "completion_len/truncated_frac": truncated.float().mean().item(),
            "throughput/gen_tokens_per_s": gen_tokens / max(timings["time/generate"], 1e-9),
        })
        metrics.update(timings)
        metrics["time/step"] = time.perf_counter() - t_step
        samples = logged_samples(rollouts, cfg.logging.num_samples, G, cfg.data.question_column,
                                 cfg.data.answer_column)
        return distributed.gather_metrics(metrics), samples

    def next_rollouts(self, step: int, timings: dict[str, float]) -> Rollouts:
        """The rollouts step `step` trains on; in async mode also starts sampling step `step + 1`'s."""
        if not self.prefetcher:
            rollouts = self.collect_rollouts(step)
        else:
            rollouts, timings["time/rollout_wait"] = self.prefetcher.take(step)
            # Nothing is in flight now, so the engine can take the learner's latest weights: the
            # next batch is sampled with them (and this one too, when nothing was prefetched).
            timings.update(self._sync_engine())
            if rollouts is None:  # the first step after a start or a resume
                rollouts = self.collect_rollouts(step)
            if step < self.recipe.training.steps:
                self.prefetcher.start(step + 1)
        timings.update(rollouts.timings)
        return rollouts

    def collect_rollouts(self, step: int) -> Rollouts:
        """Sample and score the rollouts of `step` with the weights the engine holds."""
        cfg = self.recipe
        policy_step = self._engine_step
        timings = {"time/generate": 0.0, "time/score": 0.0}
        G, wanted = cfg.rollout.group_size, cfg.rollout.prompts_per_step // self.world_size  # this process's share
        attempts = 1 + (cfg.algorithm.max_sampling_retries if cfg.algorithm.dynamic_sampling else 0)
        kept: list[Rollouts] = []
        have, drawn, dropped = 0, 0, 0
        for attempt in range(attempts):
            rows = self._draw(wanted - have if kept else wanted)
            drawn += len(rows)
            batch = unfiltered = self.generate_and_score(rows, timings, step, draw=attempt)
            if cfg.algorithm.dynamic_sampling:
                keep = algorithm.select_informative_groups(batch.rewards, G)
                dropped += int((~keep).sum())
                batch = select_groups(batch, keep, G)
            if batch.rows:
                kept.append(batch)
                have += len(batch.rows)
            if distributed.all_ranks(have >= wanted):
                break
        fallback = not kept
        if fallback:
            # Every group was uninformative on every retry: train on the last draw, unfiltered (its
            # advantages are all zero, so the step only moves the KL and entropy terms); no further
            # generation.
            kept.append(unfiltered)
        # Metrics describe the first draw: the policy's own reward distribution, before filtering.
        merged = merge(kept, wanted, G)
        merged.metrics["sampling/prompts_drawn"] = drawn
        merged.metrics["sampling/groups_dropped"] = dropped
        merged.metrics["sampling/unfiltered_fallback"] = int(fallback)  # summed over processes
        merged.timings, merged.policy_step = timings, policy_step
        return merged

    def _draw(self, count: int) -> list[dict[str, Any]]:
        """`count` prompts for this process. All processes draw the same rows from identical
        samplers (the largest count any of them asks for) and keep their own share, so the
        samplers stay in step and the main process's checkpoint holds the data position of all."""
        if self.world_size == 1:
            return self.sampler.next_batch(count)
        count = distributed.all_reduce_max(count)
        return distributed.shard(self.sampler.next_batch(count * self.world_size), self.rank, self.world_size)

    def generate_and_score(self, rows: list[dict[str, Any]], timings: dict[str, float], step: int, draw: int = 0) -> Rollouts:
        cfg = self.recipe
        G = cfg.rollout.group_size
        data = cfg.data
        prompts = [self._prompt_ids[id(r)] for r in rows]
        t0 = time.perf_counter()
        completions = self.engine.generate(prompts, G, self._sampling_for(step, draw))
        timings["time/generate"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        head = prefill(data.prompt_template)
        texts = [head + c.text for c in completions]
        columns = reward_columns(rows, completions, data.answer_column)
        prompts_text = [rows[c.prompt_index][data.question_column] for c in completions]
        result = self.scorer.score(texts, prompts_text, columns)
        metrics = dict(result.metrics)
        metrics.update(task_metrics(texts, columns, result.per_function))
        metrics["reward/mean"] = result.total.mean().item()
        metrics["reward/std"] = result.total.std().item() if len(texts) > 1 else 0.0
        timings["time/score"] += time.perf_counter() - t0
        return Rollouts(rows, completions, texts, result.total, result.per_function, metrics)

    def _sampling_for(self, step: int, draw: int) -> SamplingSettings:
        """The sampling settings of one draw of `step`.

        An engine's own random stream would start again from the seed when a killed run resumes;
        a seed made of (seed, step, draw) gives each step the samples it would have had in an
        uninterrupted run, so resuming is exact. Engines that cannot take a call seed without
        correlating its prompts (`RolloutEngine.seeds_each_call`) keep their own stream instead.
        """
        if not self.engine.seeds_each_call:
            return self.sampling
        rank = f"-{self.rank}" if self.world_size > 1 else ""  # processes sampling alike would correlate
        seed = random.Random(f"{self.recipe.seed}-{step}-{draw}{rank}").getrandbits(63)
        return dataclasses.replace(self.sampling, seed=seed)

    def loss_settings(self) -> LossSettings:
        a = self.recipe.algorithm
        names = [f.name for f in dataclasses.fields(LossSettings) if f.name != "max_completion_length"]
        return LossSettings(max_completion_length=self.recipe.rollout.max_new_tokens,
                            **{name: getattr(a, name) for name in names})

    def _check_finite(self, metrics: dict[str, float]) -> None:
        """Stop the run after `training.max_nan_steps` optimiser steps in a row were skipped."""
        if metrics.get("nan_skipped_steps"):
            log.warning("non-finite loss or gradient: step skipped (%d in a row)", self.learner.consecutive_nan_steps)
        self.learner.optimiser.check_nan_limit(self.recipe.training.max_nan_steps, self.state.checkpoint_dir,
                                               "lower training.learning_rate or check the rewards")


def step_advantages(rewards: torch.Tensor, group_size: int, scaling: str,
                    baseline: str = "group_mean") -> tuple[torch.Tensor, dict[str, float]]:
    """This process's advantages (`algorithm.compute_group_advantages`). Groups never straddle
    processes, but "batch" scaling divides by the std of the whole step's batch, gathered from every
    process, so that N processes take the step one process takes on the same batch."""
    whole_std = distributed.batch_std(rewards) if scaling == "batch" and distributed.world_size() > 1 else None
    return algorithm.compute_group_advantages(rewards, group_size, scaling, baseline=baseline, batch_std=whole_std)


def run_grpo(recipe: Recipe, run_dir: Path, model_name: str | None = None) -> Path:
    """Train with GRPO; returns the folder of the final model (an HF folder, LoRA merged)."""
    return GRPOTrainer(recipe, run_dir, model_name).train()
