"""A run folder's logged rows, read for reports: which rows are training steps and which are
evaluations, a metric's points, smoothing, the reflective-word count and a sample's correctness.

Shared by the one-run report (`report.py`: plots and summary.md) and the seeds report
(`seed_report.py`); plain functions over the dicts of `metrics.jsonl` and `samples.jsonl`.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from rewards import CORRECTNESS_REWARDS

REFLECTIVE_WORDS = ("wait", "check", "verify", "let me", "recheck", "re-evaluate")
_REFLECTIVE = re.compile(
    r"\b(?:" + "|".join(re.escape(word).replace(r"\ ", r"\s+") for word in REFLECTIVE_WORDS) + r")\b", re.IGNORECASE
)
ROW_KEYS_NOT_TRAINING = ("step", "time", "time/eval")


def numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series_of(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key` over the rows that logged a number for it."""
    points = [(row.get("step", 0), float(row[key])) for row in rows if numeric(row.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def eval_rows(rows: list[dict]) -> list[dict]:
    return [row for row in rows if any(k.startswith("eval/") and numeric(v) for k, v in row.items())]


def training_rows(rows: list[dict]) -> list[dict]:
    return [row for row in rows
            if any(not k.startswith("eval/") and k not in ROW_KEYS_NOT_TRAINING and numeric(v) for k, v in row.items())]


def dropped_share(rows: list[dict]) -> tuple[list[float], list[float]]:
    """(steps, share of drawn groups that dynamic sampling dropped), over steps that dropped any
    (runs without dynamic sampling drop none and get no line)."""
    points = [(row["step"], row["sampling/groups_dropped"] / row["sampling/prompts_drawn"]) for row in rows
              if numeric(row.get("sampling/groups_dropped")) and numeric(row.get("sampling/prompts_drawn"))
              and row["sampling/prompts_drawn"] > 0]
    if not any(share for _, share in points):
        return [], []
    return [p[0] for p in points], [p[1] for p in points]


def rolling_mean(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values: [1, 3, 5] with window 2 -> [1, 2, 4]."""
    return [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def smoothing_window(count: int) -> int:
    """A light smoothing: about an eighth of the points, at most 10; 1 (none) below 16 points."""
    return max(1, min(10, count // 8))


def smoothed(values: list[float]) -> list[float]:
    """A training curve as the seeds report draws it: the trailing mean over `smoothing_window` points."""
    return rolling_mean(values, smoothing_window(len(values)))


def edge_window(count: int) -> int:
    """How many steps "the first few" and "the last few" average: disjoint whenever count >= 2."""
    return max(1, min(5, count // 4))


def is_reflective(text: str) -> bool:
    return _REFLECTIVE.search(text or "") is not None


def reflective_share_by_step(samples: list[dict]) -> tuple[list[float], list[float]]:
    """Per logged step, the share of its sample completions holding a reflective word."""
    by_step: dict[Any, list[bool]] = defaultdict(list)
    for sample in samples:
        by_step[sample.get("step", 0)].append(is_reflective(sample.get("completion", "")))
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def sample_correct(sample: dict) -> bool | None:
    """Whether a logged sample was judged correct; None when no correctness reward scored it."""
    rewards = sample.get("rewards") or {}
    scores = [rewards[name] for name in CORRECTNESS_REWARDS if numeric(rewards.get(name))]
    return None if not scores else max(scores) >= 1.0


def read_config(path: Path) -> dict:
    """A run folder's config.yaml as a dict; {} when it is missing, broken or not a mapping."""
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}  # reports read only the model name and seed from it; a broken file must not stop them
    return loaded if isinstance(loaded, dict) else {}
