"""Per-stage wall time and peak RSS of a pipeline run, from an RSS trace and when each stage ended.

usage: stages.py RSS_TRACE STAGE_ENDS
RSS_TRACE: lines "unix_seconds MiB" (rss_watch.sh, every 2 s). STAGE_ENDS: lines "unix_seconds
stage", the modification times of the run's stage folders' DONE.json, written with
    for f in runs/r1_pipeline_toy/*/DONE.json; do echo "$(stat -c %Y $f) $(basename $(dirname $f))"; done | sort -n
A stage's time runs from the previous stage's end (the trace's first sample for the first stage)
to its own; its peak is the trace's largest sample in that span, and what it started from the
smallest in the span's first 10 s (what the stages before it left, once their objects were freed).
"""
import json
import sys
from pathlib import Path

trace = [tuple(map(int, line.split())) for line in Path(sys.argv[1]).read_text().splitlines()
         if len(line.split()) == 2 and line.split()[1].isdigit()]
ends = [(int(t), name) for t, name in (line.split() for line in Path(sys.argv[2]).read_text().splitlines())]
start = trace[0][0]
print(f"{'stage':<14}{'seconds':>9}{'peak MiB':>10}{'started from (MiB)':>20}")
for end, name in ends:
    inside = [mib for t, mib in trace if start <= t <= end]
    started_from = min((mib for t, mib in trace if start <= t <= start + 10), default=0)
    print(f"{name:<14}{end - start:>9.0f}{max(inside, default=0):>10}{started_from:>20}")
    start = end
print(f"{'trace':<14}{trace[-1][0] - trace[0][0]:>9}{max(m for _, m in trace):>10}")
