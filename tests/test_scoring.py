"""RewardScorer: weighted sums, per-function metrics, and containment of failing rewards."""
import asyncio
import logging
from dataclasses import dataclass, field
import math
import threading
import time

import pytest
import torch

from r1train.scoring import RewardScorer, build_scorer
from rewards import RewardSpecError, accuracy_reward, format_reward

COMPLETIONS = ["<think>a</think><answer>4</answer>", "<think>a</think><answer>5</answer>", "4"]
PROMPTS = ["p0", "p1", "p2"]
COLUMNS = {"answer": ["4", "4", "4"]}


def constant(value):
    def reward(completions, **columns):
        return [value] * len(completions)

    return reward


def test_weighted_sum_and_metrics():
    scorer = RewardScorer([("accuracy", accuracy_reward, 1.0), ("format", format_reward, 0.5)])
    result = scorer.score(COMPLETIONS, PROMPTS, COLUMNS)
    assert result.per_function == {"accuracy": [1.0, 0.0, 0.0], "format": [1.0, 1.0, 0.0]}
    assert torch.equal(result.total, torch.tensor([1.5, 0.5, 0.0]))
    assert result.total.dtype == torch.float32
    assert result.metrics["reward/accuracy"] == pytest.approx(1 / 3)
    assert result.metrics["reward/format"] == pytest.approx(2 / 3)
    assert result.metrics["rewards/errors"] == 0.0
    assert result.errors == []


def test_none_counts_as_zero_and_is_left_out_of_the_mean():
    def judges_first_only(completions, **columns):
        return [2.0] + [None] * (len(completions) - 1)

    result = RewardScorer([("first", judges_first_only, 1.0)]).score(COMPLETIONS, PROMPTS, COLUMNS)
    assert result.total.tolist() == [2.0, 0.0, 0.0]
    assert result.metrics["reward/first"] == 2.0  # mean over the one judged sample


def test_nothing_judged_means_no_mean():
    result = RewardScorer([("none", constant(None), 1.0)]).score(COMPLETIONS, PROMPTS, COLUMNS)
    assert "reward/none" not in result.metrics and result.errors == []


def test_prompts_and_columns_reach_the_function():
    seen = {}

    def spy(completions, **columns):
        seen.update(columns)
        return [0.0] * len(completions)

    columns = {"answer": ["4"] * 3, "level": [1, 2, 3]}
    RewardScorer([("spy", spy, 1.0)]).score(COMPLETIONS, PROMPTS, columns)
    assert seen == {"prompts": PROMPTS, "answer": ["4"] * 3, "level": [1, 2, 3]}


def raises(completions, **columns):
    raise RuntimeError("reward bug")


def returns_nan(completions, **columns):
    return [float("nan"), 1.0, float("inf")]


def wrong_length(completions, **columns):
    return [1.0]


def wrong_type(completions, **columns):
    return "1.0"


def wrong_element_type(completions, **columns):
    return [1.0, "high", 1.0]


FAILURES = [
    (raises, [None, None, None], "RuntimeError"),  # an exception
    (returns_nan, [None, 1.0, None], "NaN or infinity"),  # NaN and inf
    (wrong_length, [None, None, None], "1 values for 3"),  # a list of the wrong length
    (wrong_type, [None, None, None], "returned str"),  # not a list
    (wrong_element_type, [1.0, None, 1.0], "non-number"),  # a string inside the list
]


@pytest.mark.parametrize(
    "function, expected, message", FAILURES, ids=lambda v: getattr(v, "__name__", None)
)
def test_failures_are_contained(function, expected, message, caplog):
    scorer = RewardScorer([("bad", function, 1.0), ("good", constant(1.0), 1.0)])
    with caplog.at_level(logging.WARNING, logger="r1train.scoring"):
        result = scorer.score(COMPLETIONS, PROMPTS, COLUMNS)
        scorer.score(COMPLETIONS, PROMPTS, COLUMNS)  # a second batch: logged only once
    assert result.per_function["bad"] == expected
    assert result.per_function["good"] == [1.0, 1.0, 1.0]
    assert result.metrics["rewards/errors"] == 1.0
    assert len(result.errors) == 1 and "'bad'" in result.errors[0] and message in result.errors[0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'bad'" in warnings[0].getMessage()
    good_total = torch.tensor([1.0 + (v or 0.0) for v in expected])
    assert torch.equal(result.total, good_total)


def test_hanging_function_is_abandoned_after_the_timeout():
    release = threading.Event()
    calls = []

    def hangs(completions, **columns):
        calls.append(1)
        release.wait(30)
        return [1.0] * len(completions)

    scorer = RewardScorer([("hangs", hangs, 1.0), ("good", constant(0.5), 1.0)], timeout_s=0.3)
    start = time.monotonic()
    result = scorer.score(COMPLETIONS, PROMPTS, COLUMNS)
    assert time.monotonic() - start < 2.0
    assert result.per_function["hangs"] == [None] * 3
    assert result.per_function["good"] == [0.5] * 3
    assert "did not finish" in result.errors[0] and result.metrics["rewards/errors"] == 1.0

    # While the abandoned call still runs, the function is not started again.
    second = scorer.score(COMPLETIONS, PROMPTS, COLUMNS)
    assert len(calls) == 1 and "still running" in second.errors[0]

    # Once it has finished, the next batch runs it again.
    release.set()
    time.sleep(0.1)
    third = scorer.score(COMPLETIONS, PROMPTS, COLUMNS)
    assert len(calls) == 2 and third.per_function["hangs"] == [1.0] * 3 and third.errors == []


def test_async_functions_work():
    async def async_reward(completions, **columns):
        await asyncio.sleep(0.01)
        return [0.25] * len(completions)

    result = RewardScorer([("async", async_reward, 2.0)]).score(COMPLETIONS, PROMPTS, COLUMNS)
    assert result.per_function["async"] == [0.25] * 3 and result.total.tolist() == [0.5] * 3


def test_closures_need_no_pickling():
    lock = threading.Lock()  # unpicklable state captured by the closure

    def closure(completions, **columns):
        with lock:
            return [1.0] * len(completions)

    result = RewardScorer([("closure", closure, 1.0)]).score(COMPLETIONS, PROMPTS, COLUMNS)
    assert result.per_function["closure"] == [1.0] * 3


def test_tensor_results_are_accepted():
    result = RewardScorer([("tensor", lambda c, **k: torch.ones(len(c)), 1.0)]).score(
        COMPLETIONS, PROMPTS, COLUMNS
    )
    assert result.per_function["tensor"] == [1.0] * 3 and not result.errors


def test_mutating_inputs_does_not_affect_other_functions():
    def mutates(completions, **columns):
        completions.clear()
        columns["answer"][0] = "999"
        return []

    scorer = RewardScorer([("mutates", mutates, 1.0), ("accuracy", accuracy_reward, 1.0)])
    result = scorer.score(COMPLETIONS, PROMPTS, COLUMNS)
    assert result.per_function["accuracy"] == [1.0, 0.0, 0.0]
    assert COLUMNS["answer"] == ["4", "4", "4"]


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        RewardScorer([("a", constant(1.0), 1.0), ("a", constant(0.0), 1.0)])


def test_misaligned_columns_are_refused():
    with pytest.raises(ValueError, match="answer"):
        RewardScorer([("a", constant(1.0), 1.0)]).score(COMPLETIONS, PROMPTS, {"answer": ["4"]})


def test_total_is_finite_even_when_every_function_fails():
    scorer = RewardScorer([("raises", raises, 1.0), ("nan", returns_nan, 1.0)])
    result = scorer.score(COMPLETIONS, PROMPTS, COLUMNS)
    assert all(math.isfinite(v) for v in result.total.tolist())
    assert result.metrics["rewards/errors"] == 2.0


@dataclass
class Spec:  # shaped like the config's RewardSpec
    name: str | None = None
    path: str | None = None
    function: str | None = None
    weight: float = 1.0
    kwargs: dict = field(default_factory=dict)


def test_build_scorer_from_recipe_entries():
    scorer = build_scorer([
        Spec(name="accuracy"),
        {"name": "format", "weight": 0.5, "kwargs": {"prefix": "<think>"}},
    ])
    result = scorer.score(["a</think><answer>4</answer>"], ["p"], {"answer": ["4"]})
    assert result.per_function == {"accuracy": [1.0], "format": [1.0]}
    assert result.total.tolist() == [1.5]


def test_build_scorer_reports_bad_entries():
    with pytest.raises(RewardSpecError, match="did you mean 'accuracy'"):
        build_scorer([Spec(name="acuracy")])


def fails_on_bad(completions, **columns):
    """Raises as soon as one completion in its batch says "bad" (a parser choking on one sample)."""
    if any("bad" in c for c in completions):
        raise ValueError("cannot parse 'bad'")
    return [float(len(c)) for c in completions]


def test_a_reward_raising_on_some_samples_loses_only_those(caplog):
    completions = ["ok", "bad", "fine", "bad too"]
    scorer = RewardScorer([("picky", fails_on_bad, 1.0)])
    with caplog.at_level(logging.DEBUG, logger="r1train.scoring"):
        result = scorer.score(completions, ["p"] * 4, {})
    assert result.per_function["picky"] == [2.0, None, 4.0, None]
    assert result.metrics["rewards/errors"] == 1.0
    assert "on 2 of 4 samples alone" in result.errors[0] and "cannot parse" in result.errors[0]
    warning, = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.exc_info is None and "\n" not in warning.getMessage()  # one line on the console
    traceback, = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert traceback.exc_info[0] is ValueError  # the full traceback, for the run's log file


def test_the_time_limit_is_per_sample():
    def slow(completions, **columns):  # 0.05 s per sample: 1 s for the batch of 20
        time.sleep(0.05 * len(completions))
        return [1.0] * len(completions)

    scorer = RewardScorer([("slow", slow, 1.0)], timeout_s=0.1)
    result = scorer.score(["x"] * 20, ["p"] * 20, {})
    assert result.per_function["slow"] == [1.0] * 20 and result.errors == []


def test_the_time_limit_is_set_per_reward_in_the_recipe():
    from r1train.config import RewardSpec
    from r1train.scoring import build_scorer

    scorer = build_scorer([RewardSpec(name="accuracy", timeout_s=0.25), RewardSpec(name="format")])
    assert scorer.timeout_s == {"accuracy": 0.25, "format": 5.0}


def test_soft_overlong_defaults_to_the_recipes_completion_budget():
    from r1train.config import RewardSpec
    from r1train.scoring import build_scorer

    lengths = {"completion_tokens": [8, 13, 14, 16]}  # budget 16: the ramp covers tokens 12..16
    scorer = build_scorer([RewardSpec(name="soft_overlong")], max_new_tokens=16)
    assert scorer.score(["x"] * 4, ["p"] * 4, lengths).per_function["soft_overlong"] == [0.0, -0.25, -0.5, -1.0]
    # kwargs written in the recipe win over the defaults
    scorer = build_scorer([RewardSpec(name="soft_overlong", kwargs={"max_length": 20, "buffer": 4})],
                                 max_new_tokens=16)
    assert scorer.score(["x"] * 4, ["p"] * 4, lengths).per_function["soft_overlong"] == [0.0, 0.0, 0.0, 0.0]
