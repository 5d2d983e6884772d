#!/bin/bash
# A third round of the equal-work runs (eqwc.sh), the other order: the code before, then main compiled.
set -u
OUT=/work/notes/runs/eqwc
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwc_$3 > $OUT/$3.log 2>&1
  echo "$3 rc=$? $(date +%T)" >> $OUT/order.txt
}
run /tmp/wt_before /tmp/eqw_recipe40.yaml before_3
run /work/main /tmp/eqw_recipe40c.yaml compiled_3
