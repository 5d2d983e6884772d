#!/bin/bash
# The main command's equal-work comparison (benchmarks/results/main_command_equal_work_*.md): each
# side is a git worktree of the code to time and the recipe it runs (the same prompts, group size,
# steps and evaluations on every side; a fixed policy and a learning rate of 1e-20 make the work the
# same in expectation). Sides run one after the other, so run nothing else meanwhile. Each run's
# metrics, log and /usr/bin/time figures stay in OUT; its run folder (2 GB of checkpoints) is
# deleted. The tables: python3 benchmarks/results/main_command_equal_work_2026-12-05/table.py --in OUT TAG...
#
#   PYTHON=.venv/bin/python benchmarks/equal_work.sh OUT ROUND TAG=WORKTREE:RECIPE...
#   e.g. PYTHON=$PWD/.venv/bin/python benchmarks/equal_work.sh /tmp/eqw 1 \
#        new=/tmp/wt_new:/tmp/recipe_new.yaml before=/tmp/wt_before:/tmp/recipe_before.yaml
# Each run is tagged TAG_ROUND. The worktree's own r1train is imported (python -m from inside it).
set -u
if [ $# -lt 3 ]; then
  echo "usage: PYTHON=... $0 OUT ROUND TAG=WORKTREE:RECIPE..." >&2
  exit 2
fi
OUT=$1; ROUND=$2; shift 2
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
for side in "$@"; do
  tag=${side%%=*}_$ROUND; rest=${side#*=}; tree=${rest%%:*}; recipe=${rest#*:}
  run=equal_work_$tag
  (cd "$tree" && /usr/bin/time -v "$PYTHON" -m r1train.cli run "$recipe" --fresh --set run_name="$run") \
    > "$OUT/$tag.log" 2>&1
  echo "$tag rc=$? $(date +%T)" >> "$OUT/order.txt"
  cp "$tree/runs/$run/metrics.jsonl" "$OUT/metrics_$tag.jsonl"
  grep -E "Elapsed|Maximum resident|User time|System time|Percent of CPU" "$OUT/$tag.log" \
    | sed "s/^/$tag: /" >> "$OUT/time_v.txt"
  rm -rf "${tree:?}/runs/$run"
done
