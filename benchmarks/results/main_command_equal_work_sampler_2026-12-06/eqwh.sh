#!/bin/bash
# Equal-work 40-step runs (fixed policy, lr 1e-30): main with heap.keep_freed_memory and the inverse-CDF sampler
# (7f240ff), the code before issue 21 (c5040b4), then main with the sampler alone (a3af7a2); the main sides
# compiled and checkpointed, as the main recipe is.
set -u
OUT=/work/notes/runs/eqwh
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwh_$3 > $OUT/$3.log 2>&1
  echo "$3 rc=$? $(date +%T)" >> $OUT/order.txt
}
run /work/main /tmp/eqw_recipe40cg.yaml heap_1
run /tmp/wt_before /tmp/eqw_recipe40.yaml before_2
run /tmp/wt_sampler /tmp/eqw_recipe40cg.yaml sampler_2
