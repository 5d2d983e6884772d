#!/bin/bash
# Equal-work 40-step runs (fixed policy, lr 1e-30): main with the inverse-CDF sampler (a3af7a2), the code before
# issue 21 (c5040b4), then main before the sampler (c506d1a); the main sides compiled and checkpointed, as the
# main recipe is.
set -u
OUT=/work/notes/runs/eqws
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqws_$3 > $OUT/$3.log 2>&1
  echo "$3 rc=$? $(date +%T)" >> $OUT/order.txt
}
run /work/main /tmp/eqw_recipe40cg.yaml sampler_1
run /tmp/wt_before /tmp/eqw_recipe40.yaml before_1
run /tmp/wt_prev /tmp/eqw_recipe40cg.yaml prev_1
