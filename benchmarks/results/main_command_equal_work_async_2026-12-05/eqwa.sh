#!/bin/bash
# Equal-work 40-step runs (fixed policy, lr 1e-30): main compiled with rollout.async_generation,
# main compiled synchronous, and the code before issue 21 (c5040b4), interleaved.
set -u
OUT=/work/notes/runs/eqwa
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwa_$3 > $OUT/$3.log 2>&1
  echo "$3 rc=$? $(date +%T)" >> $OUT/order.txt
}
run /work/main /tmp/eqw_recipe40ca.yaml async_1
run /tmp/wt_before /tmp/eqw_recipe40.yaml before_1
run /work/main /tmp/eqw_recipe40c.yaml sync_1
run /work/main /tmp/eqw_recipe40ca.yaml async_2
