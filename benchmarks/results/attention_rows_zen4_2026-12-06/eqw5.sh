#!/bin/bash
# Equal-work runs, session 28: attention rows chosen by cost (wt_new), with one-call evaluation too (wt_head),
# capped at 128 sequences at once (wt_head3), main before them (wt_old),
# the code before issue 21 (wt_before); one after the other, alone.
set -u
OUT=/tmp/eqw5; R=$1; shift
run() {
  cd $1 && /usr/bin/time -v /tmp/ci-clone/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqw5_$3 > $OUT/$3.log 2>&1
  echo "round $R: $3 rc=$? $(date +%T)" >> $OUT/order.txt
}
for side in "$@"; do
  case $side in
    rows) run /tmp/wt_new /tmp/eqw_recipe40cgb_lr20.yaml rows_$R ;;
    head) run /tmp/wt_head /tmp/eqw_recipe40cgb_lr20.yaml head_$R ;;
    capped) run /tmp/wt_head3 /tmp/eqw_recipe40cgb_lr20.yaml capped_$R ;;
    old) run /tmp/wt_old /tmp/eqw_recipe40cgb_lr20.yaml old_$R ;;
    before) run /tmp/wt_before /tmp/eqw_recipe40_lr20.yaml before_$R ;;
  esac
done
