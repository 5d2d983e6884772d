"""Rollouts with `transformers` generate, on the very model object the learner trains.

The engine and the learner share one `torch.nn.Module` (a plain causal LM or a peft model with
LoRA adapters), so there is nothing to copy after an optimiser step and `sync_weights` only checks
that it was handed that same model. When generation runs while the learner trains (async
rollouts) the engine keeps a copy of its own instead (`own_copy=True`) and `sync_weights` copies
into it. This backend works everywhere and is the default in tests and small runs; the vLLM
backend is the fast one.

Log-probabilities. The engine returns, for every sampled token, its log-probability under
`log_softmax` of the model's *raw* logits (temperature 1, before temperature, top-k or top-p), in
fp32. That is the quantity the learner computes when it scores the same tokens, so truncated
importance sampling and the post-sync check compare like with like; it is also what vLLM returns
in its `raw_logprobs` mode. When sampling at a temperature other than 1, these are not the
log-probabilities of the distribution the tokens were drawn from, by design.
They are recorded step by step during generation (a logits processor keeps the current step's
log-softmax, a stopping criterion picks out the sampled token once it is appended), so memory stays
at one [batch, vocab] tensor instead of the [steps, batch, vocab] that `output_logits` would keep.

Deliberate simplifications:
- Sequences are left-padded into fixed-size batches; no continuous batching.
- Stop strings are checked by decoding each unfinished completion after every step, which costs
  O(length^2) decoding per sequence but gives exactly vLLM's rule: generation ends at the first token
  after which the decoded completion contains a stop string, and that token is kept.
- The sampling settings given here override whatever the model's generation config asks for
  (repetition penalty, n-gram blocking, minimum length), so rollouts come from the policy itself.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from r1train.engines.base import Completion, SamplingSettings
from r1train.fsdp import is_sharded
from r1train.hardware import bf16_autocast_supported
from r1train.heap import return_free_memory


class HFEngine:
    """Generate with `model.generate` on the learner's own model.

    Args:
        model: the causal LM the learner trains (a `PreTrainedModel` or a peft model wrapping one).
        tokenizer: its tokenizer; used for the pad and EOS ids and to decode completions.
        batch_size: most sequences (prompts x samples) sent to one `generate` call.
        autocast_dtype: run generation under `torch.autocast` with this dtype (use the learner's,
            e.g. torch.bfloat16, so the engine's numerics match the learner's); None runs as stored.
        eos_token_ids: token ids that end a completion; defaults to the tokenizer's EOS plus any
            listed in the model's generation config.
        seed: seeds the engine's own random stream, which carries on from call to call (as vLLM's
            engine seed does) and never touches the learner's; None samples from torch's global
            stream. `SamplingSettings.seed`, when set, seeds a single call instead.
        own_copy: generate with a frozen copy of `model`, refreshed by sync_weights, so the learner
            can update its weights while this engine samples.
    """

    seeds_each_call = True  # see RolloutEngine

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        batch_size: int = 64,
        autocast_dtype: torch.dtype | None = None,
        eos_token_ids: list[int] | None = None,
        seed: int | None = None,
        own_copy: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.own_copy = own_copy
        self.model = copy.deepcopy(model).requires_grad_(False) if own_copy else model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self.eos_token_ids = eos_token_ids if eos_token_ids is not None else _default_eos_ids(model, tokenizer)
        if not self.eos_token_ids:
            raise ValueError("no EOS token id: pass eos_token_ids or use a tokenizer that defines one")
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        self.seed = seed
        self._rng_states: tuple[torch.Tensor, torch.Tensor | None] | None = None  # (CPU, CUDA) after the last call

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[Completion]:
        """Sample `n` completions per prompt; returns len(prompts) * n completions, grouped by prompt."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        requests = [(index, prompt) for index, prompt in enumerate(prompts) for _ in range(n)]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self._random_stream(sampling.seed, device), self._autocast(device):
                completions: list[Completion] = []
                for start in range(0, len(requests), self.batch_size):
                    completions += self._generate_batch(requests[start : start + self.batch_size], sampling, device)
        finally:
            self.model.train(was_training)
        return completions

    @classmethod
    def from_recipe(cls, recipe, model: torch.nn.Module, model_dir, tokenizer) -> "HFEngine":
        # With async generation the learner updates its weights while the engine samples.
        autocast_dtype = None
        device = next(model.parameters()).device
        if recipe.training.bf16 and device.type == "cuda" and bf16_autocast_supported(device):
            # On a GPU, sample in the learner's precision (bf16 autocast over its fp32 weights); on
            # CPU the HF engine keeps fp32 generation, as the CPU recipes and their figures assume.
            autocast_dtype = torch.bfloat16
        return cls(model, tokenizer, seed=recipe.seed, own_copy=recipe.rollout.async_generation,
                   autocast_dtype=autocast_dtype)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Copy `model`'s weights into the engine's own copy; with a shared model, nothing to copy."""
        if self.own_copy:
            with torch.no_grad():
                self.model.load_state_dict(model.state_dict())
            return
        if model is not self.model:
            raise ValueError(
                "HFEngine generates with the model it was built on; sync_weights got a different "
                "module. Build the engine on the learner's model instead of syncing another one."
            )

    def sleep(self, weights_stale: bool = False) -> None:
        """No generation memory outlives a generate() call here."""

    def wake_up(self) -> None:
        """See sleep()."""

    def release_idle_memory(self) -> None:
        """Hand the heap's free pages back: generation here runs in this process."""
        return_free_memory()

    def close(self) -> None:
        """The model belongs to the learner; nothing to release."""

    @contextlib.contextmanager
    def _random_stream(self, call_seed: int | None, device: torch.device) -> Iterator[None]:
        """Sample from the call's seed, else the engine's own stream, else torch's global one."""
        if call_seed is None and self.seed is None:
            yield
            return
        cuda = device.type == "cuda"
        cuda_index = device.index if device.index is not None else (torch.cuda.current_device() if cuda else None)
        with torch.random.fork_rng(devices=[cuda_index] if cuda else []):
            if call_seed is not None:
                torch.manual_seed(call_seed)
                yield
                return
            if self._rng_states is None:
                torch.manual_seed(self.seed)
            else:
                torch.set_rng_state(self._rng_states[0])
                if cuda:
                    torch.cuda.set_rng_state(self._rng_states[1], cuda_index)
            yield
            self._rng_states = (torch.get_rng_state(), torch.cuda.get_rng_state(cuda_index) if cuda else None)

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def _generate_batch(
        self, requests: list[tuple[int, list[int]]], sampling: SamplingSettings, device: torch.device
    ) -> list[Completion]:
        prompts = [prompt for _, prompt in requests]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends at column width-1
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention_mask[row, width - len(prompt) :] = 1

        recorder = _RecordRawLogprobs()
        gather = _GatherSampledLogprobs(recorder)
        criteria: list[StoppingCriteria] = [gather]
        stopper = None
        if sampling.stop:
            stopper = _StopOnStrings(self.tokenizer, sampling.stop, width, self.eos_token_ids)
            criteria.append(stopper)

        sequences = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            use_cache=True,  # the learner may have switched the cache off for gradient checkpointing
            logits_processor=LogitsProcessorList([recorder]),
            stopping_criteria=StoppingCriteriaList(criteria),
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_length=0,
            # Sharded weights are gathered per forward pass, a collective: every process keeps
            # stepping until all are done.
            synced_gpus=is_sharded(self.model),
            **_sampling_kwargs(sampling),
        )
        generated = sequences[:, width:].cpu()  # [B, T] including pads after each finished row
        logprobs = gather.logprobs()[:, : generated.shape[1]]  # [B, T]

        eos = set(self.eos_token_ids)
        completions = []
        for row, (prompt_index, prompt) in enumerate(requests):
            token_ids = generated[row].tolist()
            end, finish_reason = len(token_ids), "length"
            eos_at = next((i for i, t in enumerate(token_ids) if t in eos), None)
            if eos_at is not None:
                end, finish_reason = eos_at + 1, "stop"  # the EOS token is kept
            # `<=`: a row whose stop string completes on the batch's last step has no padding after
            # it, so its stop position equals its length; it still finished.
            if stopper is not None and row in stopper.stopped_at and stopper.stopped_at[row] <= end:
                end, finish_reason = stopper.stopped_at[row], "stop"
            token_ids = token_ids[:end]
            completions.append(Completion.decoded(self.tokenizer, sampling.stop, prompt_index, prompt, token_ids,
                                                  logprobs[row, :end].tolist(), finish_reason))
        return completions


def _sampling_kwargs(sampling: SamplingSettings) -> dict:
    if sampling.temperature == 0:
        return {"do_sample": False}
    return {
        "do_sample": True,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,  # 0 disables top-k in transformers, as in SamplingSettings
    }


def _default_eos_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    generation_config = getattr(model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        configured = [configured]
    for token_id in configured or []:
        if token_id not in ids:
            ids.append(token_id)
    return ids


class _RecordRawLogprobs(LogitsProcessor):
    """Keeps log_softmax of this step's raw logits; placed before the sampling warpers."""

    def __init__(self):
        self.latest: torch.Tensor | None = None  # [B, V]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.latest = torch.log_softmax(scores.float(), dim=-1)
        return scores


class _GatherSampledLogprobs(StoppingCriteria):
    """Once a step's token is appended, picks its log-prob out of the recorder; never stops anything."""

    def __init__(self, recorder: _RecordRawLogprobs):
        self.recorder = recorder
        self.steps: list[torch.Tensor] = []  # each [B]

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        assert self.recorder.latest is not None
        self.steps.append(self.recorder.latest.gather(1, input_ids[:, -1:]).squeeze(1).cpu())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def logprobs(self) -> torch.Tensor:
        return torch.stack(self.steps, dim=1)  # [B, T]


class _StopOnStrings(StoppingCriteria):
    """Stops a row at the first token after which its decoded completion contains a stop string.

    `stopped_at[row]` is the completion length (stop-completing token included) at that point.
    """

    def __init__(self, tokenizer, stop: list[str], prompt_width: int, eos_token_ids: list[int]):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.prompt_width = prompt_width
        self.eos = set(eos_token_ids)
        self.stopped_at: dict[int, int] = {}

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        completions = input_ids[:, self.prompt_width :].tolist()
        for row, token_ids in enumerate(completions):
            if row in self.stopped_at:
                done[row] = True
            elif not self.eos.intersection(token_ids):  # rows ended by EOS are only padded further
                text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
                if any(s in text for s in self.stop):
                    self.stopped_at[row] = len(token_ids)
                    done[row] = True
        return done.to(input_ids.device)
