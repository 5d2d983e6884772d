"""Helpers shared by the benchmarks: run a command as a measured child process, summarise, and
find the model a benchmark workload names.

Peak memory is measured two ways, because a trainer may spread over several processes (vLLM can
run its engine in a child): `peak_tree_rss` samples the summed resident memory of the child and
all its descendants a few times a second (it can miss a spike shorter than the sampling period),
and `max_rss` is the kernel's exact high-water mark of the largest single process in that tree
(`ru_maxrss` from `wait4`, which counts the child and every descendant it waited for).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil

_GIB = 1024**3


@dataclass
class ProcessMeasurement:
    returncode: int
    wall_s: float
    peak_tree_rss: int  # bytes, summed over the process tree, sampled
    max_rss: int  # bytes, largest single process (kernel high-water mark)


def run_measured(cmd: list[str], env: dict[str, str] | None = None, sample_every_s: float = 0.1) -> ProcessMeasurement:
    """Run `cmd` to completion (its output goes to ours) and measure its time and peak memory."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            total = 0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                return
            peak = max(peak, total)
            done.wait(sample_every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # wait4 (not Popen.wait) returns the resource usage of this one child, so measuring several
    # children one after the other keeps their high-water marks apart.
    _, status, usage = os.wait4(process.pid, 0)
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux.
    return ProcessMeasurement(process.returncode, time.perf_counter() - start, peak, usage.ru_maxrss * 1024)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def gib(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else n_bytes / _GIB


def workload_model_dir(workload: dict) -> str:
    """The local folder of the model a benchmark workload's recipe names (the default model if none)."""
    from r1train.models import resolve_model_dir

    return resolve_model_dir(workload["recipe"].get("model", {}).get("name", "smollm2-135m-instruct"))
