#!/bin/bash
# Round 2 of the equal-work runs: unpadded micro-batches ending in padding to 32 (wt_new2), main before
# unpadded rows (wt_main), the code before issue 21 (wt_before).
set -u
OUT=/tmp/eqwz; R=$1; shift
run() {
  cd $1 && /usr/bin/time -v /tmp/ci-clone/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwz_$3 > $OUT/$3.log 2>&1
  echo "round $R: $3 rc=$? $(date +%T)" >> $OUT/order.txt
}
for side in "$@"; do
  case $side in
    unpadded32) run /tmp/wt_new2 /tmp/eqw_recipe40cgb_lr20.yaml unpadded32_$R ;;
    old) run /tmp/wt_main /tmp/eqw_recipe40cgb_lr20.yaml old_$R ;;
    before) run /tmp/wt_before /tmp/eqw_recipe40_lr20.yaml before_$R ;;
  esac
done
