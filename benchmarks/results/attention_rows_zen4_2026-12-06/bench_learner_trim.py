"""bench_learner with glibc's malloc_trim(0) before each timed step when TRIM=1 (see bench_learner_trim.txt).

    TRIM=1 PYTHONPATH=. .venv/bin/python benchmarks/results/attention_rows_zen4_2026-12-06/bench_learner_trim.py ARGS
"""
import ctypes
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
import bench_learner  # noqa: E402

libc = ctypes.CDLL("libc.so.6")
untrimmed = bench_learner._timed


def timed(run):
    if os.environ.get("TRIM") == "1":
        libc.malloc_trim(0)
    return untrimmed(run)


bench_learner._timed = timed
sys.argv = ["bench_learner.py"] + sys.argv[1:]
bench_learner.main()
