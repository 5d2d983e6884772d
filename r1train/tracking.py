"""Where a run's numbers go: metrics.jsonl, the trackers of `logging.report_to`, sample completions,
a progress bar.

metrics.jsonl holds one JSON object per step. On resume, rows past the resumed step are dropped
first, so a run killed after logging but before checkpointing writes no duplicate rows; a run that
starts at step 0 (nothing to resume) starts its logs afresh, evaluation-at-start row included.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from r1train.trackers import scalar_metrics


class RunLogger:
    def __init__(self, run_dir: Path, trackers: list[str] = (), progress: bool = True, total_steps: int = 0,
                 start_step: int = 0, description: str = "grpo", project: str = "r1train",
                 config: dict[str, Any] | None = None):
        from r1train.trackers import open_trackers

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.samples_path = self.run_dir / "samples.jsonl"
        for path in (self.metrics_path, self.samples_path):
            _truncate_after_step(path, start_step)
        self._trackers = open_trackers(list(trackers), self.run_dir, start_step, project, config or {})
        self._bar = None
        if progress and total_steps:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc=description, unit="step",
                             dynamic_ncols=True, file=sys.stderr)

    @classmethod
    def for_recipe(cls, run_dir: Path, recipe, total_steps: int, start_step: int) -> "RunLogger":
        """The logger a training stage writes with: the recipe's trackers, project and progress bar."""
        import dataclasses

        log = recipe.logging
        config = {key: value for key, value in dataclasses.asdict(recipe).items() if key != "stages"}
        return cls(run_dir, log.trackers, log.progress, total_steps, start_step, description=Path(run_dir).name,
                   project=log.project, config=config)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "time": round(time.time(), 3)}
        row.update({k: _jsonable(v) for k, v in metrics.items()})
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = scalar_metrics(row)
        for tracker in self._trackers:
            tracker.log(step, scalars)

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        with self.samples_path.open("a") as f:
            for sample in samples:
                f.write(json.dumps({"step": step, **sample}, default=str) + "\n")

    def progress(self, step: int, postfix: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items() if v is not None}, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        for tracker in self._trackers:
            tracker.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL log; a last line cut short by a crash mid-write is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines) - 1:
                raise
    return rows


def _truncate_after_step(path: Path, step: int) -> None:
    """Keep the rows of steps up to `step` (none when starting at 0), and drop a cut-short last line."""
    if not path.is_file():
        return
    kept = [json.dumps(row) for row in read_metrics(path) if step > 0 and row.get("step", 0) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
