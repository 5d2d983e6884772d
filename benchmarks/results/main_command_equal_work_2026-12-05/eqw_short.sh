#!/bin/bash
# Short equal-work runs alternating before/after (15 steps each, /tmp/eqw_recipe15.yaml) to compare the two code
# versions in the same phase of the machine's drifting pace.
set -u
OUT=/work/notes/runs/eqw
run() {  # tree tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run /tmp/eqw_recipe15.yaml --fresh --set run_name=eqw_$2 > $OUT/$2.log 2>&1
  echo "$2 rc=$? $(date +%T)" >> $OUT/order.txt
}
run /tmp/wt_before s_before_1
run /work/main s_after_1
run /tmp/wt_before s_before_2
run /work/main s_after_2
