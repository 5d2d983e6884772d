#!/bin/bash
# Equal work on Zen 4: main before (c041fda, /tmp/wt_main) and with the selective checkpoint (/tmp/wt_new).
OUT=/tmp/eqwz; R=$1; shift
run() { cd $1 && /usr/bin/time -v /tmp/ci-clone/.venv/bin/python -m r1train.cli run /tmp/eqw_recipe40cgb_lr20.yaml --fresh --set run_name=eqwz_$2 > $OUT/$2.log 2>&1; echo "round $R: $2 rc=$? $(date +%T)" >> $OUT/order.txt; }
for side in "$@"; do case $side in old) run /tmp/wt_main old_$R ;; new) run /tmp/wt_new new_$R ;; esac; done
