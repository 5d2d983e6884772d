"""One offline `vllm.LLM.generate` call, watched and bounded: its progress reported as prompts
finish, and the sequences it runs at once capped.

vLLM's offline loop takes a progress-bar factory (`use_tqdm`) and drives what it returns with
`update(finished_requests)`; `progress_reporter` hands it an object that passes those counts on to
a callback and does nothing else. The cap works where vLLM's scheduler runs in this process (the
colocated engine): its admission limit `max_num_active_reqs` is lowered for the call and restored.
Each running sequence holds KV-cache blocks, so the cap bounds what one long call keeps resident.
"""
from __future__ import annotations

import contextlib
import functools
import time
from typing import Callable


def progress_reporter(report: Callable[[int], None]):
    """What `LLM.generate` takes as `use_tqdm` so that `report(count)` hears of each finished
    prompt's completions."""
    return functools.partial(_progress_bar, report)


def in_process_scheduler(llm):
    """vLLM's scheduler where its engine core runs in this process (colocated), else None."""
    core = getattr(getattr(llm.llm_engine, "engine_core", None), "engine_core", None)
    scheduler = getattr(core, "scheduler", None)
    return scheduler if hasattr(scheduler, "max_num_active_reqs") else None


@contextlib.contextmanager
def running_at_most(scheduler, sequences: int | None):
    """Within the block, `scheduler` admits at most `sequences` sequences to run at once (no cap
    where either is None)."""
    if scheduler is None or sequences is None:
        yield
        return
    admitted = scheduler.max_num_active_reqs
    scheduler.max_num_active_reqs = min(admitted, sequences)
    try:
        yield
    finally:
        scheduler.max_num_active_reqs = admitted


def _progress_bar(report: Callable[[int], None], iterable=None, **_):
    """vLLM's tqdm factory call: for the requests' progress a `_FinishedPrompts`; the prompts it
    renders first (an iterable to wrap) go through unwatched."""
    return iterable if iterable is not None else _FinishedPrompts(report)


class _FinishedPrompts:
    """The progress bar vLLM's offline loop drives, passing each finished prompt's completion
    count to `report`: what the loop touches and nothing more."""

    def __init__(self, report: Callable[[int], None]):
        self.report, self.n, self.postfix = report, 0, ""
        self._start = time.perf_counter()

    @property
    def format_dict(self) -> dict[str, float]:  # the loop divides tokens by the elapsed time
        return {"elapsed": max(time.perf_counter() - self._start, 1e-9)}

    def update(self, count: int) -> None:
        self.n += count
        self.report(count)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass
