"""bench_memory.py with every heap trim the CPU engine makes timed, by the method that made it.

    PYTHONPATH=. .venv/bin/python benchmarks/results/trim_after_push_avx2_2026-12-07/time_trims.py \
        recipes/r1_zero_toy.yaml --set ...   # bench_memory.py's arguments
"""
import collections
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
import bench_memory  # noqa: E402
from r1train.engines import vllm_engine  # noqa: E402

untimed_trim = vllm_engine.return_free_memory
seconds_by_caller = collections.defaultdict(list)


def timed_trim():
    caller = traceback.extract_stack(limit=2)[0].name
    start = time.perf_counter()
    untimed_trim()
    seconds_by_caller[caller].append(time.perf_counter() - start)


vllm_engine.return_free_memory = timed_trim
sys.argv = ["bench_memory.py"] + sys.argv[1:]
bench_memory.main()
for caller, seconds in seconds_by_caller.items():
    seconds = sorted(seconds)
    print(f"trim in {caller}: {len(seconds)} calls, median {seconds[len(seconds) // 2] * 1000:.1f} ms, "
          f"max {seconds[-1] * 1000:.1f} ms, total {sum(seconds):.2f} s")
