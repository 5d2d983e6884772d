#!/bin/bash
# bench_learner at the main recipe's shape, alternating the code before (4f63bb2) and after (main)
set -u
for round in 1 2; do
  for tree in /tmp/wt_prev /work/main; do
    echo "=== $tree round $round $(date +%T)"
    cd $tree && PYTHONPATH=$tree /work/main/.venv/bin/python $tree/benchmarks/bench_learner.py --prompts 16 --group-size 8 \
      --prompt-tokens 95,105 --completion-tokens 12,30 --sides learner_compiled_checkpointing --repeats 3 2>&1 | grep -v Warning | tail -8
  done
done
