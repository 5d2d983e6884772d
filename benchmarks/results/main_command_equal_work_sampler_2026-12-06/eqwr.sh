#!/bin/bash
# Equal-work 40-step runs (fixed policy, lr 1e-30), round 3: the code before issue 21 (c5040b4) first this time,
# then main with the inverse-CDF sampler (99e383f, the code of e0189fc); main compiled and checkpointed, as the
# main recipe is.
set -u
OUT=/work/notes/runs/eqwr
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwr_$3 > $OUT/$3.log 2>&1
  echo "$3 rc=$? $(date +%T)" >> $OUT/order.txt
}
run /tmp/wt_before /tmp/eqw_recipe40.yaml before_3
run /work/main /tmp/eqw_recipe40cg.yaml sampler_3
