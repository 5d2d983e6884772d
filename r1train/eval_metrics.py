"""Held-out evaluation scores from judged samples: pass@1, maj@k, pass@k, format rate, length,
accuracy per value of a data column.

Pure functions over plain Python lists, no model and no I/O, so `evaluation.py` can stay about
generating and judging while the arithmetic lives (and is tested) here.

Deliberate simplifications:
- maj@k votes over the extracted answer strings as they are, after stripping surrounding
  whitespace: "4" and "4.0" are different votes even where the task's rule would accept both.
  The vote winner counts as correct when any sample that gave that answer was judged correct, so
  the rule itself still decides correctness.
- pass@k uses the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models
  Trained on Code"): with n >= k samples of which c are correct, 1 - C(n-c, k) / C(n, k). With
  exactly k samples per question, which is what the evaluator draws, that is 1 when any sample is
  correct and 0 otherwise.
"""
from __future__ import annotations

import re

from collections import Counter
from math import comb
from typing import Mapping, Sequence

# Column order of the evaluation table; the names are the evaluator's metrics without "eval/".
TABLE_METRICS = ("accuracy", "pass@1", "maj@k", "pass@k", "greedy_accuracy", "last_number_accuracy", "format_rate",
                 "completion_len", "think_nonempty_frac", "think_len", "think_len_closed", "no_think_accuracy", "thinking_gain")


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased chance that at least one of k samples drawn from n (c of them correct) is correct.

    Args:
        n: samples drawn for the question (n >= k).
        c: how many of them were judged correct (0 <= c <= n).
        k: the budget whose success rate is estimated.

    Returns:
        1 - C(n-c, k) / C(n, k), a float in [0, 1].

    Example: estimate_pass_at_k(4, 1, 2) == 1 - C(3, 2) / C(4, 2) == 1 - 3/6 == 0.5, and
    estimate_pass_at_k(4, 1, 4) == 1.0 (with k = n it is "any sample correct").
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_vote_correct(correct: Sequence[float], answers: Sequence[str | None]) -> float:
    """1.0 when the most common extracted answer of one question is a correct one, else 0.0.

    Args:
        correct: [k] 0/1 judgement per sample.
        answers: [k] extracted final answer per sample, None where none could be extracted.

    Returns:
        1.0 or 0.0. None answers do not vote; a tie goes to the answer seen first; a question
        where no sample has an answer scores 0.0.

    Example: correct=[0, 1, 1, 0], answers=["5", "4", "4", None] -> "4" wins 2 to 1 -> 1.0;
    correct=[0, 1], answers=["5", "4"] -> a 1-1 tie, "5" was seen first -> 0.0.
    """
    votes = Counter(a.strip() for a in answers if a is not None)
    if not votes:
        return 0.0
    # Counter keeps first-insertion order and most_common sorts stably, so ties go to the first seen.
    winner = votes.most_common(1)[0][0]
    won = any(a is not None and a.strip() == winner and ok for a, ok in zip(answers, correct))
    return 1.0 if won else 0.0


def summarize(problems: Sequence[Mapping], formats: Sequence[float], lengths: Sequence[int], k: int) -> dict[str, float]:
    """Summarise k judged samples per question into the evaluation scores.

    Args:
        problems: one entry per question, {"correct": [k] 0/1 floats, "answers": [k] str | None}.
        formats: [num_questions * k] strict-format score (0/1) of every sample.
        lengths: [num_questions * k] completion length in tokens of every sample.
        k: samples per question (the k of maj@k and pass@k).

    Returns:
        {"pass@1": mean correctness over all samples,
         "maj@k": share of questions whose majority answer is correct,
         "pass@k": mean over questions of the unbiased pass@k estimate (see module docstring),
         "format_rate": mean of `formats`, "completion_len": mean of `lengths`}.

    Example with k = 2 and two questions:
        problems = [{"correct": [1, 0], "answers": ["4", "5"]},   # tie, "4" seen first: maj right
                    {"correct": [0, 0], "answers": [None, "7"]}]  # all wrong
        summarize(problems, formats=[1, 1, 0, 1], lengths=[10, 20, 30, 40], k=2)
        == {"pass@1": 0.25, "maj@k": 0.5, "pass@k": 0.5, "format_rate": 0.75, "completion_len": 25.0}
    """
    if not problems:
        raise ValueError("summarize needs at least one question")
    if not formats or not lengths:
        raise ValueError("summarize needs the format score and length of every sample")
    samples, majority, any_correct = [], [], []
    for i, problem in enumerate(problems):
        correct, answers = list(problem["correct"]), list(problem["answers"])
        if len(correct) != len(answers) or len(correct) < k:
            raise ValueError(f"question {i}: {len(correct)} judgements and {len(answers)} answers for k={k}")
        samples.extend(correct)
        majority.append(majority_vote_correct(correct, answers))
        any_correct.append(estimate_pass_at_k(len(correct), sum(1 for ok in correct if ok), k))
    return {
        "pass@1": sum(samples) / len(samples),
        "maj@k": sum(majority) / len(majority),
        "pass@k": sum(any_correct) / len(any_correct),
        "format_rate": sum(formats) / len(formats),
        "completion_len": sum(lengths) / len(lengths),
    }


def format_eval_table(scores: Mapping[str, Mapping[str, float]]) -> str:
    """An aligned plain-text table: one row per model, one column per evaluation metric present.

    Args:
        scores: {model name: metrics}, metrics keyed "eval/<name>" as the evaluator returns them
            (plain "<name>" keys, as `summarize` returns them, are read too). Other keys (time,
            model) are ignored.

    Returns:
        The table as one string, numbers to 3 decimals, "-" where a model lacks a metric that
        another model has; columns in the order of TABLE_METRICS.

    Example:
        format_eval_table({"base": {"eval/accuracy": 0.02, "eval/format_rate": 0.0}})
        ==  "model  accuracy  format_rate\\n"
            "-----  --------  -----------\\n"
            "base      0.020        0.000"
    """
    values = {model: {name: _lookup(metrics, name) for name in TABLE_METRICS} for model, metrics in scores.items()}
    columns = [name for name in TABLE_METRICS if any(row[name] is not None for row in values.values())]
    body = [[str(model), *(_cell(row[name]) for name in columns)] for model, row in values.items()]
    return _aligned(["model", *columns], body)


def _aligned(header: list[str], body: list[list[str]]) -> str:
    """Header, a rule of dashes and the body rows as aligned text: the first column (a name) reads
    left-aligned, the others (numbers) right-aligned so their decimal points line up."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        parts = [cells[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    rule = ["-" * width for width in widths]
    return "\n".join(render(line) for line in [header, rule, *body])


def _label(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def accuracy_by(values: Sequence, correct: Sequence[Sequence[float]],
                greedy: Sequence[float] | None = None) -> dict[str, dict[str, float]]:
    """Accuracy per value of one data column (MATH's `level`, the toy's `op`): where a model is
    right and where it is not, which one overall figure hides.

    Args:
        values: question i's value of the column; compared by string form, so a missing column
            and None fall together. A list value (the multistep toy's `ops`, ["+", "-"]) is
            labelled by its items joined with "," ("+,-"), not by Python's list repr.
        correct: question i's samples judged 0/1.
        greedy: question i's greedy answer judged 0/1, when the evaluation drew one.

    Returns:
        {value: {"questions": n, "accuracy": mean of those questions' samples, and
        "greedy_accuracy" with `greedy`}}, values in order (numbers by size, then text).

    Example:
        accuracy_by(["+", "-", "+"], [[1, 1], [0, 1], [0, 0]], greedy=[1, 0, 0])
        == {"+": {"questions": 2, "accuracy": 0.5, "greedy_accuracy": 0.5},
            "-": {"questions": 1, "accuracy": 0.5, "greedy_accuracy": 0.0}}
    """
    if len(values) != len(correct) or (greedy is not None and len(greedy) != len(values)):
        raise ValueError(f"accuracy_by: {len(values)} values for {len(correct)} questions"
                         + ("" if greedy is None else f" and {len(greedy)} greedy judgements"))
    groups: dict[str, list[int]] = {}
    for i, value in enumerate(values):
        groups.setdefault(_label(value), []).append(i)
    out = {}
    for value in sorted(groups, key=_value_order):
        members = groups[value]
        samples = [ok for i in members for ok in correct[i]]
        entry = {"questions": len(members), "accuracy": sum(samples) / len(samples)}
        if greedy is not None:
            entry["greedy_accuracy"] = sum(greedy[i] for i in members) / len(members)
        out[value] = entry
    return out


def _value_order(value: str) -> tuple:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def breakdown_metrics(column: str, breakdown: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """`accuracy_by`'s result as flat evaluator metrics: `eval/accuracy/<column>=<value>` and
    `eval/greedy_accuracy/<column>=<value>`, so trackers draw one curve per value."""
    return {f"eval/{name}/{column}={value}": figure
            for value, entry in breakdown.items() for name, figure in entry.items() if name != "questions"}


def format_breakdown_table(column: str, breakdown: Mapping[str, Mapping[str, float]]) -> str:
    """`accuracy_by`'s result as an aligned plain-text table, one row per value.

    Example:
        format_breakdown_table("op", {"+": {"questions": 2, "accuracy": 0.5}})
        ==  "op  questions  accuracy\n"
            "--  ---------  --------\n"
            "+           2     0.500"
    """
    names = [name for name in ("accuracy", "greedy_accuracy") if any(name in e for e in breakdown.values())]
    body = [[value, str(entry["questions"]), *(_cell(entry.get(name)) for name in names)]
            for value, entry in breakdown.items()]
    return _aligned([column, "questions", *names], body)


def _lookup(metrics: Mapping[str, float], name: str) -> float | None:
    value = metrics.get(f"eval/{name}", metrics.get(name))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number_correct(texts: list[str], references: list) -> list[float] | None:
    """Answer accuracy with the format set aside: is the last number anywhere in the text equal to
    the reference? It tells whether a model knows the answer before it has learned the template
    (a model that never writes `<answer>` scores 0 on `accuracy` however good its arithmetic).

    Args:
        texts: N completion texts.
        references: N reference answers.
    Returns:
        N floats in {0.0, 1.0}, or None when a reference is not a plain number (the check would
        mean nothing there).

    Example: last_number_correct(["7 + 5 is 12.", "<answer>13</answer>"], ["12", "12"]) == [1.0, 0.0]
    """
    values = []
    for reference in references:
        if reference is None or not _NUMBER.fullmatch(str(reference).strip()):
            return None
        values.append(float(str(reference)))
    scores = []
    for text, value in zip(texts, values):
        numbers = _NUMBER.findall(text)
        scores.append(float(bool(numbers) and float(numbers[-1]) == value))
    return scores


def thinking_of(text: str) -> str:
    """The thinking of a completion (assistant text with its prefill), stripped: between the first
    `<think>` and the last `</think>`, or from `<think>` to the end while never closed (still
    thinking when it stopped); "" without a `<think>`.

    Example: thinking_of("<think>\n13 + 9 = 22\n</think>\n<answer>22</answer>") == "13 + 9 = 22",
    thinking_of("<think>\n</think>\n<answer>22</answer>") == "".
    """
    return _thinking_and_closed(text)[0]


def _thinking_and_closed(text: str) -> tuple[str, bool]:
    """`thinking_of(text)`, and whether that thinking was closed with `</think>`."""
    from rewards.extraction import THINK_OPEN, think_text

    inside = think_text(text)
    if inside is not None:
        return inside.strip(), True
    start = text.find(THINK_OPEN)
    return ("" if start < 0 else text[start + len(THINK_OPEN):].strip()), False


def think_stats(texts: list[str]) -> dict[str, float]:
    """How much the completions think.

    Args:
        texts: N >= 1 assistant responses (prefill included).
    Returns:
        {"think_nonempty_frac": share whose thinking holds any non-space character,
         "think_len": mean length of the thinking in characters (empty ones count as 0),
         "think_len_closed": the same mean over the completions that closed their thinking with
         `</think>`; left out when none did}.
        The closed mean is the one that follows the thinking a policy chooses to write: a base
        model's thinking that rambles until the token limit counts in `think_len` at its cut length,
        so there a falling `think_len` can hide finished thoughts that grow longer.

    Example: think_stats(["<think>\n3+4=7\n</think><answer>7</answer>", "<think>\n</think><answer>7</answer>"])
        == {"think_nonempty_frac": 0.5, "think_len": 2.5, "think_len_closed": 2.5}
    """
    if not texts:
        raise ValueError("think_stats needs at least one completion")
    thoughts_and_closed = [_thinking_and_closed(text) for text in texts]
    thoughts = [thought for thought, _ in thoughts_and_closed]
    stats = {"think_nonempty_frac": sum(1 for t in thoughts if t) / len(thoughts),
             "think_len": sum(len(t) for t in thoughts) / len(thoughts)}
    closed = [thought for thought, was_closed in thoughts_and_closed if was_closed]
    if closed:
        stats["think_len_closed"] = sum(len(t) for t in closed) / len(closed)
    return stats
