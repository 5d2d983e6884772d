#!/bin/bash
# Equal-work 40-step runs (fixed policy, lr 1e-30): main with the tied embedding's in-place gradient and the
# output layer's sliced backward (compiled, gradient checkpointing, as the main recipe is), then the code before
# issue 21 (c5040b4).
set -u
OUT=/work/notes/runs/eqwm
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwm_$3 > $OUT/$3.log 2>&1
  echo "$3 rc=$? $(date +%T)" >> $OUT/order.txt
}
run /work/main /tmp/eqw_recipe40cg.yaml tied_1
run /tmp/wt_before /tmp/eqw_recipe40.yaml before_1
