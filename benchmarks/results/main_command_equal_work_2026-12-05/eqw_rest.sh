#!/bin/bash
# The rest of the equal-work runs after before_1 (eqw_pair.sh's first run): after_1 at 100 steps, then a shorter pair in
# the other order, after_2 then before_2, at 40 steps (/tmp/eqw_recipe40.yaml), to fit the session.
set -u
OUT=/work/notes/runs/eqw
while pgrep -f "run_name=eqw_before_1" > /dev/null; do sleep 5; done
echo "before_1 done $(date +%T)" >> $OUT/order.txt
run() {  # tree tag recipe
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $3 --fresh --set run_name=eqw_$2 > $OUT/$2.log 2>&1
  echo "$2 rc=$? $(date +%T)" >> $OUT/order.txt
}
run /work/main after_1 /tmp/eqw_recipe.yaml
run /work/main after_2 /tmp/eqw_recipe40.yaml
run /tmp/wt_before before_2 /tmp/eqw_recipe40.yaml
