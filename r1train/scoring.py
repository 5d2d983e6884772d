"""Score a batch of completions with several weighted reward functions, containing their failures.

`build_scorer(recipe.rewards)` resolves the recipe's entries (see `rewards.resolve_reward`) into a
`RewardScorer`, each reward scoped to the prompts it `applies_to` (`r1train/reward_scope.py`);
`RewardScorer.score(completions, prompts, columns)` returns a `ScoreResult`.

Each reward function runs in its own daemon thread, all of them at once. Its time limit is per
sample (`timeout_s` of its recipe entry): a call on N samples may take N times that, so a batch
holding a few slow samples is not cut off as a whole. A reward that needs a hard limit on each
sample enforces it itself, as the accuracy reward does with its worker process: then only the slow
samples lose their score. A function that raises on the batch is called again on each sample
alone (in the same thread, one after the other, within what is left of the budget), so only the
samples it fails on lose their score. A function that raises, runs past its budget, returns
something other than a list of N numbers or None, or returns NaN or infinity does not stop
training: the samples it failed on get None for that function, the problem is logged once per
function and kind of problem (logging.warning, one line naming the function; the traceback goes
to the `r1train` logger at DEBUG level, which the run's log file records), listed in
`ScoreResult.errors` for this batch and counted in `metrics["rewards/errors"]`.

Trade-off, deliberately accepted: Python cannot kill a thread, so a function that hangs is
abandoned, still running, as a daemon thread (it dies with the process). Threads need no pickling,
so closures and lambdas work as rewards, which processes would not allow. While an abandoned call
is still running, later batches do not start that function again (its results are None and an
error is reported), so a reward that always hangs costs one thread, not one per batch, and a
function is never run twice at once. A CPU-bound runaway function still competes for the GIL with
the others until it ends.

`total` is the weighted sum over functions, where a None (not judged, or failed) adds 0: a sample
that a reward does not judge gets neither credit nor penalty from it.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
import numbers
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from r1train.reward_scope import REASONING, scope_reward
from rewards import resolve_reward

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0  # per sample; RewardSpec.timeout_s sets it per reward


@dataclass
class ScoreResult:
    total: torch.Tensor  # [N] float32, weighted sum of the rewards, None counted as 0
    per_function: dict[str, list[float | None]]  # name -> N scores (None: not judged or failed)
    metrics: dict[str, float]  # reward/<name>: mean over judged samples; rewards/errors: count
    errors: list[str] = field(default_factory=list)  # one message per failing function


class _Call:
    """One reward function's call on one batch, run in a daemon thread.

    If the batch call raises, the thread calls the function again on each sample alone:
    `per_sample` then holds one score (or None) per sample finished so far, `sample_errors` the
    exceptions of the samples that raised.
    """

    def __init__(self, function: Callable, completions: list[str], columns: dict[str, list]):
        self.result: Any = None
        self.error: BaseException | None = None
        self.per_sample: list[Any] | None = None
        self.sample_errors: list[BaseException] = []
        self.thread = threading.Thread(
            target=self._run, args=(function, completions, columns), daemon=True
        )
        self.thread.start()

    def _run(self, function, completions, columns) -> None:
        try:
            self.result = _call(function, completions, columns)
            return
        except BaseException as error:  # noqa: BLE001 - contained and reported by the scorer
            self.error = error
        if len(completions) < 2:
            return
        self.per_sample = []
        for i, completion in enumerate(completions):
            try:
                one = _call(function, [completion], {key: [values[i]] for key, values in columns.items()})
                valid = hasattr(one, "__len__") and len(one) == 1
                self.per_sample.append(one[0] if valid else None)
            except BaseException as error:  # noqa: BLE001
                self.sample_errors.append(error)
                self.per_sample.append(None)


def _call(function: Callable, completions: list[str], columns: dict[str, list]) -> Any:
    result = function(completions, **columns)
    if inspect.isawaitable(result):  # async def rewards, or sync wrappers returning one
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


class RewardScorer:
    """Weighted reward functions applied to batches of completions.

    Args:
        specs: (name, function, weight) per reward; names must be distinct (they key the metrics).
        timeout_s: seconds per sample: a call on N samples may take N * timeout_s; a function
            still running then is abandoned and its unscored samples get None. One number for
            every function, or a mapping name -> seconds (names left out get DEFAULT_TIMEOUT_S).
    """

    def __init__(self, specs: list[tuple[str, Callable, float]],
                 timeout_s: float | Mapping[str, float] = DEFAULT_TIMEOUT_S):
        names = [name for name, _, _ in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"reward names must be distinct, got {duplicates} more than once")
        limits = dict(timeout_s) if isinstance(timeout_s, Mapping) else {name: timeout_s for name in names}
        for name, limit in limits.items():
            if not limit > 0:
                raise ValueError(f"timeout_s of reward {name!r} must be positive, got {limit}")
        self.specs = [(name, function, float(weight)) for name, function, weight in specs]
        self.timeout_s = {name: float(limits.get(name, DEFAULT_TIMEOUT_S)) for name in names}
        self._abandoned: dict[str, threading.Thread] = {}  # name -> a call still running
        self._reported: set[tuple[str, str]] = set()  # (name, kind) already logged

    def score(
        self, completions: list[str], prompts: list[str], columns: dict[str, list]
    ) -> ScoreResult:
        """Score N completions.

        Args:
            completions: N completion texts.
            prompts: N prompt texts, passed to every function as the column `prompts`.
            columns: dataset columns, each a list of N values, passed as keyword arguments.
        Returns:
            ScoreResult with total [N], per-function scores, metrics and this batch's errors.
        """
        count = len(completions)
        for key, values in {"prompts": prompts, **columns}.items():
            if len(values) != count:
                raise ValueError(f"column {key!r} has {len(values)} values for {count} completions")

        start = time.monotonic()
        calls: dict[str, _Call] = {}
        per_function: dict[str, list[float | None]] = {}
        errors: list[str] = []
        for name, function, _ in self.specs:
            running = self._abandoned.get(name)
            if running is not None and running.is_alive():
                per_function[name] = [None] * count
                message = "is still running from an earlier batch; skipped"
                errors.append(self._report(name, "busy", message))
                continue
            self._abandoned.pop(name, None)
            # Copies, so a function that mutates its inputs cannot affect the others.
            arguments = {key: list(values) for key, values in columns.items() if key != "prompts"}
            arguments["prompts"] = list(prompts)
            calls[name] = _Call(function, list(completions), arguments)

        for name, call in calls.items():
            budget = self.timeout_s[name] * count
            call.thread.join(max(0.0, start + budget - time.monotonic()))
            if call.thread.is_alive():
                self._abandoned[name] = call.thread
                finished = list(call.per_sample or [])  # a per-sample retry keeps what it scored
                per_function[name] = _validate(finished, len(finished))[0] + [None] * (count - len(finished))
                message = (f"did not finish within {budget:g} s ({self.timeout_s[name]:g} s per sample x {count}; "
                           "raise its timeout_s if it is slow, not stuck)")
                errors.append(self._report(name, "timeout", message))
            elif call.error is not None and call.per_sample is not None:
                scores, _ = _validate(call.per_sample, count)
                per_function[name] = scores
                first = call.sample_errors[0] if call.sample_errors else call.error
                message = (f"raised {type(call.error).__name__} on the batch and on {len(call.sample_errors)} of "
                           f"{count} samples alone: {first}")
                errors.append(self._report(name, "raised", message, exc=first))
            elif call.error is not None:
                per_function[name] = [None] * count
                message = f"raised {type(call.error).__name__}: {call.error}"
                errors.append(self._report(name, "raised", message, exc=call.error))
            else:
                scores, problem = _validate(call.result, count)
                per_function[name] = scores
                if problem:
                    errors.append(self._report(name, "invalid", problem))

        ordered = {name: per_function[name] for name, _, _ in self.specs}
        return ScoreResult(
            total=self._total(ordered, count),
            per_function=ordered,
            metrics=self._metrics(ordered, len(errors)),
            errors=errors,
        )

    def _total(self, per_function: dict[str, list[float | None]], count: int) -> torch.Tensor:
        total = torch.zeros(count, dtype=torch.float64)
        for name, _, weight in self.specs:
            values = [0.0 if value is None else value for value in per_function[name]]
            total += weight * torch.tensor(values, dtype=torch.float64)
        return total.to(torch.float32)

    @staticmethod
    def _metrics(per_function: dict[str, list[float | None]], error_count: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, values in per_function.items():
            judged = [value for value in values if value is not None]
            if judged:  # no key when nothing was judged: a mean of nothing is not 0
                metrics[f"reward/{name}"] = sum(judged) / len(judged)
        metrics["rewards/errors"] = float(error_count)
        return metrics

    def _report(self, name: str, kind: str, message: str, exc: BaseException | None = None) -> str:
        text = f"reward {name!r} {message}"
        text = " ".join(text.split())[:500]
        if (name, kind) not in self._reported:
            self._reported.add((name, kind))
            # One line on the console; the traceback only at DEBUG level (the run's log file).
            logger.warning("%s (its samples get no reward; reported once)", text)
            if exc is not None:
                logger.debug("reward %r: traceback", name, exc_info=exc)
        else:
            logger.debug(text)
        return text


class UnscoredSteps:
    """Counts steps in a row in which no reward judged any sample (every score None, so every
    advantage is 0 and nothing trains, while the schedule advances): warns at the first, raises
    RunError (naming the rewards and the empty data columns) at `limit`."""

    def __init__(self, limit: int, answer_column: str):
        self.limit, self.answer_column, self.in_a_row = limit, answer_column, 0

    def check(self, judged: bool, step: int, per_function: dict[str, list], rows: list[dict[str, Any]]) -> None:
        if judged:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        samples = len(next(iter(per_function.values()), []))
        problem = (f"step {step}: no reward judged any of the {samples} samples (every score of "
                   f"{', '.join(repr(name) for name in per_function)} is None), so nothing trains; "
                   f"{self._null_columns(rows)}")
        if self.in_a_row >= self.limit:
            from r1train.errors import RunError

            raise RunError(f"{problem}; stopping after {self.limit} such steps in a row (training.max_unscored_steps)")
        logger.warning("%s (the run stops after %d such steps in a row)", problem, self.limit)

    def _null_columns(self, rows: list[dict[str, Any]]) -> str:
        """Which data columns hold nothing in any of `rows`: the usual reason no reward can judge."""
        empty = [key for key in rows[0] if all(row.get(key) in (None, "") for row in rows)] if rows else []
        if not empty:
            return f"check what the rewards read (data.answer_column is '{self.answer_column}')"
        return (f"column(s) {', '.join(repr(key) for key in empty)} are null in every row of this batch "
                f"(data.answer_column is '{self.answer_column}'): check the data file and the column the rewards read")


def reward_columns(rows: list[dict[str, Any]], completions: list, answer_column: str = "answer") -> dict[str, list]:
    """The keyword columns reward functions receive, aligned with `completions`.

    Every dataset column of each completion's prompt row, `completion_tokens` (its length in
    tokens), and `answer` taken from `answer_column` when the dataset names it otherwise.

    Args:
        rows: the prompt rows; completion i belongs to rows[completions[i].prompt_index].
        completions: engine completions (`prompt_index`, `token_ids`).
        answer_column: the dataset column holding reference answers.
    """
    expanded = [rows[c.prompt_index] for c in completions]
    columns = {key: [r.get(key) for r in expanded] for key in rows[0]}
    columns["completion_tokens"] = [len(c.token_ids) for c in completions]
    if answer_column != "answer" and answer_column in columns:
        columns["answer"] = columns[answer_column]
    return columns


def _soft_overlong_defaults(max_new_tokens: int) -> dict[str, int]:
    """DAPO's punishment ramps over the last quarter of the completion budget the recipe allows."""
    return {"max_length": max_new_tokens, "buffer": max(1, max_new_tokens // 4)}


# Rewards whose keyword arguments default from the recipe's rollout.max_new_tokens, not from the
# function's own signature (soft_overlong's 1024/256 would never fire under a 256-token budget).
RECIPE_DEFAULT_KWARGS: dict[str, Callable[[int], dict[str, Any]]] = {"soft_overlong": _soft_overlong_defaults}


def reward_entry(spec: Any) -> dict[str, Any]:
    """One recipe reward entry (the config's RewardSpec, or a mapping with its keys) as a dict of
    the keys it sets (None values left out): the one reading of an entry that every user shares."""
    entry = dict(spec) if isinstance(spec, Mapping) else dict(vars(spec))
    return {key: value for key, value in entry.items() if value is not None}


def resolve_entry(spec: Any, max_new_tokens: int | None = None) -> tuple[str, Callable]:
    """(name, reward function) of one recipe entry (`rewards.resolve_reward` on its name, path,
    function and kwargs; the entry's weight, scope and time limit are the scorer's business).

    Raises:
        rewards.RewardSpecError: the entry names a reward that cannot be resolved.
    """
    entry = reward_entry(spec)
    if max_new_tokens is not None and entry.get("name") in RECIPE_DEFAULT_KWARGS:
        entry["kwargs"] = {**RECIPE_DEFAULT_KWARGS[entry["name"]](max_new_tokens), **(entry.get("kwargs") or {})}
    return resolve_reward({key: entry[key] for key in ("name", "path", "function", "kwargs") if key in entry})


def build_scorer(specs: Iterable[Any], max_new_tokens: int | None = None) -> RewardScorer:
    """A RewardScorer for the recipe's reward entries, each scoped by its `applies_to`.

    Args:
        specs: entries as mappings or objects with the attributes name, path, function, weight,
            kwargs, applies_to and timeout_s (the config's RewardSpec); unset (None) fields are left out.
        max_new_tokens: the recipe's rollout.max_new_tokens, which the rewards in
            RECIPE_DEFAULT_KWARGS take their defaults from (kwargs given in the entry win).
    Raises:
        rewards.RewardSpecError: an entry names a reward that cannot be resolved.
    """
    resolved, limits = [], {}
    for spec in specs:
        entry = reward_entry(spec)
        name, function = resolve_entry(entry, max_new_tokens)
        resolved.append((name, scope_reward(function, entry.get("applies_to") or REASONING),
                         float(entry.get("weight", 1.0))))
        limits[name] = entry.get("timeout_s") or DEFAULT_TIMEOUT_S
    return RewardScorer(resolved, timeout_s=limits)


def _validate(result: Any, count: int) -> tuple[list[float | None], str | None]:
    """(scores, problem): a list of N floats or None, with None where a value was unusable."""
    if hasattr(result, "tolist") and not isinstance(result, (list, tuple)):
        result = result.tolist()  # numpy arrays and tensors
    if not isinstance(result, (list, tuple)):
        return [None] * count, f"returned {type(result).__name__}, expected a list of {count} numbers"
    if len(result) != count:
        return [None] * count, f"returned {len(result)} values for {count} completions"
    scores: list[float | None] = []
    non_finite = wrong_type = 0
    for value in result:
        if value is None:
            scores.append(None)
        elif isinstance(value, numbers.Real):
            number = float(value)
            if math.isfinite(number):
                scores.append(number)
            else:
                scores.append(None)
                non_finite += 1
        else:
            scores.append(None)
            wrong_type += 1
    problems = []
    if non_finite:
        problems.append(f"returned NaN or infinity for {non_finite} of {count} samples")
    if wrong_type:
        problems.append(f"returned a non-number for {wrong_type} of {count} samples")
    return scores, "; ".join(problems) or None
