"""Held-out evaluation: k samples per question, scored by the task's rule, summarised as
pass@1 / maj@k / pass@k / strict format rate / length / thinking share, plus greedy accuracy and,
optionally, the accuracy with the thinking forced empty (what the thinking is worth).

Used four ways: periodically inside GRPO (`Evaluator.run`), on a saved model at the end of SFT
(`evaluate_model_dir`), as a pipeline stage (`run_eval_stage`), and from the command line
(`r1train eval`). The task rule is the reward that says whether an answer is right for data with
these columns (`rewards.correctness_reward`: countdown, code, or accuracy against the `answer`
column).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from r1train import eval_metrics
from r1train.config import Recipe
from r1train.data import check_column, load_data
from r1train.engines.base import SamplingSettings, generate_many
from r1train.prompts import encode_prompt, prefill
from r1train.scoring import reward_columns


def correctness_rule(columns: dict[str, list]) -> str | None:
    """The name of the reward that says whether a sample of this data is correct."""
    import rewards

    return rewards.correctness_reward(columns)


def correctness_function(columns: dict[str, list]) -> tuple[str, Callable] | None:
    name = correctness_rule(columns)
    return None if name is None else (name, _built_reward(name))


@functools.lru_cache(maxsize=None)
def _built_reward(name: str) -> Callable:
    """A registered reward with its defaults, built once (the code reward's default is its
    bubblewrap sandbox, refused where bwrap is missing)."""
    import rewards

    return rewards.get_reward(name)


def task_metrics(texts: list[str], columns: dict[str, list],
                 scored: dict[str, list[float | None]] | None = None) -> dict[str, float]:
    """Accuracy (by the task's rule), strict format rate and thinking share and length of a batch,
    whatever the recipe weights.

    Accuracy is the mean over the samples the rule judges: prompts without a reference answer
    (general prompts mixed into a batch) are left out rather than counted wrong. `scored` holds the
    recipe's reward scores of this batch by name: a rule the recipe already ran (the code reward,
    whose programs are costly to run twice) is read from there.
    """
    import rewards

    out = {"format_rate": sum(rewards.format_reward(texts)) / len(texts), **eval_metrics.think_stats(texts)}
    name = correctness_rule(columns)
    if name is not None:
        if scored is not None and name in scored:
            scores = scored[name]
        else:
            scores = correctness_function(columns)[1](texts, **columns)
        judged = [s for s in scores if s is not None]
        if judged:
            out["accuracy"] = sum(judged) / len(judged)
    return out


@dataclass
class Evaluator:
    rows: list[dict[str, Any]]
    tokenizer: Any
    template: str
    system_prompt: str | None
    question_column: str
    answer_column: str
    samples: int
    sampling: SamplingSettings
    greedy: bool
    # Also sample with `<think>\n</think>\n<answer>` prefilled: accuracy without thinking, and the gain.
    no_think: bool = False
    by: str | None = None  # a data column: accuracy per value too (`breakdown`, eval/accuracy/<column>=<value>)
    progress: bool = True  # a progress bar (rate, time left) on stderr while the completions are sampled
    # Inside a run the bar goes away when done, leaving the run's own bar; `r1train eval` keeps it.
    leave_progress: bool = False
    # The last run's accuracy per value of `by` (eval_metrics.accuracy_by), for `r1train eval`'s table.
    breakdown: dict | None = None

    @classmethod
    def from_recipe(cls, cfg: Recipe, tokenizer, path: str | None = None,
                    by_setting: str = "evaluation.by") -> "Evaluator":
        e = cfg.evaluation
        data = dataclasses.replace(cfg.data, eval=path) if path else cfg.data
        rows = load_data(data, "eval", (cfg.data.question_column,))[: e.max_examples]
        if e.by:
            check_column(rows, e.by, by_setting, "data.eval")
        sampling = SamplingSettings(
            max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens, temperature=e.temperature,
            top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, stop=list(cfg.rollout.stop),
        )
        return cls(rows, tokenizer, cfg.data.prompt_template, cfg.data.system_prompt, cfg.data.question_column,
                   cfg.data.answer_column, e.samples, sampling, e.greedy, e.no_think, by=e.by,
                   progress=cfg.logging.progress)

    def run(self, engine, details: list | None = None) -> dict[str, float]:
        """Evaluate `engine`'s current weights; returns metrics prefixed `eval/`."""
        t0 = time.perf_counter()
        k = self.samples
        # Sampled and greedy requests, with the thinking and (`no_think`) without, in as few engine
        # calls as the engine allows (`_generate`): vLLM then decodes them all in the same steps.
        kinds = [(k, self.sampling)] + ([(1, _greedy(self.sampling))] if self.greedy else [])
        requests = [(self._prompts(no_think=False), n, sampling) for n, sampling in kinds]
        if self.no_think:
            requests += [(self._prompts(no_think=True), n, sampling) for n, sampling in kinds]
        bar = _progress_bar(len(self.rows) * sum(n for _, n, _ in requests), self.progress, self.leave_progress)
        try:
            results = _generate(engine, requests, bar)
        finally:
            bar.close()
        (sampled, *greedy), without_thinking = results[:len(kinds)], results[len(kinds):]
        texts, correct, answers, lengths = self._judge(sampled, prefill(self.template))
        problems = [
            {"correct": correct[i * k:(i + 1) * k], "answers": answers[i * k:(i + 1) * k]} for i in range(len(self.rows))
        ]
        import rewards

        formats = rewards.format_reward(texts)
        summary = eval_metrics.summarize(problems, formats, lengths, k)
        out = {f"eval/{name}": value for name, value in summary.items()}
        out["eval/accuracy"] = out["eval/pass@1"]
        out.update({f"eval/{name}": value for name, value in eval_metrics.think_stats(texts).items()})
        format_aside = eval_metrics.last_number_correct(texts, [self.rows[c.prompt_index].get(self.answer_column)
                                                                for c in sampled])
        if format_aside is not None:
            out["eval/last_number_accuracy"] = sum(format_aside) / len(format_aside)
        greedy_correct = None
        if greedy:
            _, greedy_correct, _, _ = self._judge(greedy[0], prefill(self.template))
            out["eval/greedy_accuracy"] = sum(greedy_correct) / len(greedy_correct)
        if self.by:
            self.breakdown = eval_metrics.accuracy_by([row.get(self.by) for row in self.rows],
                                                      [p["correct"] for p in problems], greedy_correct)
            out.update(eval_metrics.breakdown_metrics(self.by, self.breakdown))
        if self.no_think:
            out.update(self._without_thinking(out, *without_thinking))
        out["time/eval"] = time.perf_counter() - t0
        if details is not None:
            for i, row in enumerate(self.rows):
                details.append({"question": row[self.question_column], "answer": row.get(self.answer_column),
                                "completions": texts[i * k:(i + 1) * k], "correct": correct[i * k:(i + 1) * k]})
        return out

    def _prompts(self, no_think: bool) -> list[list[int]]:
        return [encode_prompt(self.tokenizer, r[self.question_column], self.template, self.system_prompt, no_think)
                for r in self.rows]

    def _without_thinking(self, with_thinking: dict[str, float], sampled, greedy=None) -> dict[str, float]:
        """The completions of the same questions with the thinking forced empty: `no_think_accuracy`
        (sampled, pass@1), `no_think_greedy_accuracy`, and `thinking_gain`, the sampled accuracy
        the thinking adds."""
        head = prefill(self.template, no_think=True)
        _, correct, _, _ = self._judge(sampled, head)
        out = {"eval/no_think_accuracy": sum(correct) / len(correct)}
        out["eval/thinking_gain"] = with_thinking["eval/accuracy"] - out["eval/no_think_accuracy"]
        if greedy is not None:
            _, greedy_correct, _, _ = self._judge(greedy, head)
            out["eval/no_think_greedy_accuracy"] = sum(greedy_correct) / len(greedy_correct)
        return out

    def _judge(self, completions, head: str):
        texts = [head + c.text for c in completions]
        columns = reward_columns(self.rows, completions, self.answer_column)
        rule = correctness_function(columns)
        if rule is None:
            import rewards

            needs = "; ".join(f"{rewards.registered_columns(name).describe()} ({name})"
                              for name in rewards.CORRECTNESS_REWARDS)
            raise ValueError(f"evaluation data needs the columns of a reward that judges answers: {needs}")
        correct = [float(s or 0.0) for s in rule[1](texts, **columns)]
        from rewards.extraction import tagged_answer

        answers = [tagged_answer(t) for t in texts]
        return texts, correct, answers, [len(c.token_ids) for c in completions]


# Completions decoded at once while evaluating: a call's worth with an engine that cannot report
# its progress within a call (so that the progress bar moves: two of the HF engine's batches of
# 64), the sequences running at once in one call with one that can. vLLM's own cap on CPU is 256:
# with it, evaluations held more of the KV cache resident, and the equal-work run's peak RSS rose
# by 0.31 GiB (benchmarks/results/attention_rows_zen4_2026-12-06/).
EVAL_CHUNK_COMPLETIONS = 128


def _progress_bar(total: int, enabled: bool, leave: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="eval", unit="sample", disable=not enabled, leave=leave, dynamic_ncols=True,
                file=sys.stderr)


def _generate(engine, requests: list[tuple[list[list[int]], int, SamplingSettings]], bar) -> list[list]:
    """`generate_many` of `requests` (prompts, n, sampling; the same number of prompts in each),
    `bar` advancing as completions are done: in one call where the engine reports them as they
    finish (vLLM: one continuous batch of at most EVAL_CHUNK_COMPLETIONS sequences, refilled as
    they end, so one tail of long completions where chunks would each have theirs), else a chunk
    of prompts at a time (`_generate_in_chunks`)."""
    if getattr(engine, "reports_progress", False):
        results = engine.generate_many(requests, progress=bar.update, max_running=EVAL_CHUNK_COMPLETIONS)
        engine.release_idle_memory()
        return results
    return _generate_in_chunks(engine, requests, bar)


def _generate_in_chunks(engine, requests: list[tuple[list[list[int]], int, SamplingSettings]], bar) -> list[list]:
    """`generate_many` of `requests`, a chunk of their prompts at a time.

    Returns one completion list per request, grouped by prompt, with `prompt_index` counted over
    all of the request's prompts; `bar` advances by the completions of each chunk.
    """
    per_call = max(1, EVAL_CHUNK_COMPLETIONS // sum(n for _, n, _ in requests))
    results: list[list] = [[] for _ in requests]
    for start in range(0, len(requests[0][0]), per_call):
        chunk = [(prompts[start:start + per_call], n, sampling) for prompts, n, sampling in requests]
        for result, completions in zip(results, generate_many(engine, chunk)):
            result += [dataclasses.replace(c, prompt_index=c.prompt_index + start) for c in completions]
            bar.update(len(completions))
        # A training step's generation is followed by the engine's sleep, which trims the heap; chunks
        # follow each other, and what each freed piled up: the main recipe's evaluations rose 0.36-0.44
        # GiB above their start, 0.27-0.32 with a trim after each (AMX machine, 2026-12-05).
        engine.release_idle_memory()
    return results


def _greedy(sampling: SamplingSettings) -> SamplingSettings:
    return SamplingSettings(max_new_tokens=sampling.max_new_tokens, temperature=0.0, stop=list(sampling.stop))


def evaluate_model_dir(cfg: Recipe, model_name: str, details: list | None = None) -> dict[str, float]:
    """Evaluate a saved model (folder or alias) on data.eval with the recipe's rollout backend."""
    from r1train.models import load_model, load_tokenizer, resolve_model_dir
    from r1train.engines import engine_from_recipe, generation_model

    model_dir = resolve_model_dir(model_name)
    tokenizer = load_tokenizer(model_dir)
    engine = engine_from_recipe(cfg, generation_model(cfg, load_model(model_dir).eval()), model_dir, tokenizer)
    try:
        return Evaluator.from_recipe(cfg, tokenizer).run(engine, details)
    finally:
        engine.close()


def run_eval_stage(cfg: Recipe, stage_dir: Path, model_name: str) -> Path:
    """Pipeline stage: evaluate a model on data.eval, write scores.json and details.jsonl."""
    details: list = []
    scores = evaluate_model_dir(cfg, model_name, details)
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / "scores.json").write_text(json.dumps({"model": model_name, **scores}, indent=2))
    with (stage_dir / "details.jsonl").open("w") as f:
        for row in details:
            f.write(json.dumps(row) + "\n")
    print(eval_metrics.format_eval_table({model_name: scores}), flush=True)
    return stage_dir / "scores.json"


def evaluate_cli(args) -> int:
    """`r1train eval --model M --data FILE [--samples k] [--by COLUMN] [--out FILE]`."""
    from r1train.config import Recipe, load_recipe
    from r1train.errors import RunError
    from r1train.models import load_model, load_tokenizer, resolve_model_dir
    from r1train.prompts import check_template
    from r1train.engines import engine_from_recipe, generation_model

    cfg = load_recipe(args.recipe) if args.recipe else Recipe()
    if args.template:
        check_template(args.template)
        cfg.data.prompt_template = args.template
    if args.backend:
        cfg.rollout.backend = args.backend
    if args.subset:
        cfg.data.subset = args.subset
    if args.split:
        cfg.data.eval_split = args.split
    if args.samples < 1:
        raise RunError("--samples must be at least 1")
    cfg.evaluation.samples = args.samples
    cfg.evaluation.temperature = args.temperature
    cfg.evaluation.max_examples = args.max_examples or 10**9
    if args.max_new_tokens:
        cfg.evaluation.max_new_tokens = args.max_new_tokens
    cfg.evaluation.no_think = cfg.evaluation.no_think or args.no_think
    if args.by:
        cfg.evaluation.by = args.by
    evaluator = Evaluator.from_recipe(cfg, None, path=args.data, by_setting="--by" if args.by else "evaluation.by")
    evaluator.progress, evaluator.leave_progress = True, True
    model_dir = resolve_model_dir(args.model)
    tokenizer = load_tokenizer(model_dir)
    evaluator.tokenizer = tokenizer
    engine = engine_from_recipe(cfg, generation_model(cfg, load_model(model_dir)), model_dir, tokenizer)
    details: list = []
    scores = evaluator.run(engine, details)
    engine.close()
    print(eval_metrics.format_eval_table({args.model: scores}))
    result = {"model": args.model, "data": args.data, "metrics": scores}
    if evaluator.breakdown is not None:
        print("\n" + eval_metrics.format_breakdown_table(evaluator.by, evaluator.breakdown))
        result["by"] = {"column": evaluator.by, "values": evaluator.breakdown}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**result, "examples": details}, indent=2))
    return 0
