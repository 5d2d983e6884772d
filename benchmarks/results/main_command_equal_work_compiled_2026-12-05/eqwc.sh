#!/bin/bash
# Equal-work 40-step runs (fixed policy, lr 1e-30; benchmarks/results/main_command_equal_work_2026-12-05.md):
# main with training.compile on and off, and the code before issue 21 (c5040b4), interleaved.
#   eqwc.sh       rounds 1 and 2 (ran 13:11-13:42 UTC)
#   eqwc.sh 3     round 3, the other order: the code before, then main compiled (ran 14:54-15:02 UTC from a
#                 separate script holding the same run function and these two runs)
set -u
OUT=/work/notes/runs/eqwc
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwc_$3 > $OUT/$3.log 2>&1
  echo "$3 rc=$? $(date +%T)" >> $OUT/order.txt
}
if [ "${1:-}" = 3 ]; then
  run /tmp/wt_before /tmp/eqw_recipe40.yaml before_3
  run /work/main /tmp/eqw_recipe40c.yaml compiled_3
  exit
fi
run /work/main /tmp/eqw_recipe40c.yaml compiled_1
run /work/main /tmp/eqw_recipe40.yaml eager_1
run /tmp/wt_before /tmp/eqw_recipe40.yaml before_1
run /work/main /tmp/eqw_recipe40c.yaml compiled_2
run /work/main /tmp/eqw_recipe40.yaml eager_2
run /tmp/wt_before /tmp/eqw_recipe40.yaml before_2
