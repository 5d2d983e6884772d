#!/bin/bash
# Equal-work 40-step runs (fixed policy, lr 1e-30): main as the main recipe now is (compiled, gradient checkpointing),
# the code before issue 21 (c5040b4), and main compiled without checkpointing, in one round.
set -u
# eqwg.sh 2: a second round, the other order (the code before first), two runs.
OUT=/work/notes/runs/eqwg
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwg_$3 > $OUT/$3.log 2>&1
  echo "$3 rc=$? $(date +%T)" >> $OUT/order.txt
}
if [ "${1:-}" = 2 ]; then
  run /tmp/wt_before /tmp/eqw_recipe40.yaml before_2
  run /work/main /tmp/eqw_recipe40cg.yaml checkpointing_2
  exit
fi
run /work/main /tmp/eqw_recipe40cg.yaml checkpointing_1
run /tmp/wt_before /tmp/eqw_recipe40.yaml before_1
run /work/main /tmp/eqw_recipe40c.yaml no_checkpointing_1
