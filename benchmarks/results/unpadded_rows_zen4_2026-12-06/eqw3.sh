#!/bin/bash
# Equal-work 40-step runs on the Zen 4 machine, one after the other: main with unpadded rows (74c8a0b),
# main before it (a3a8a7a = c041fda's code), the code before issue 21 (c5040b4); the fixed policy
# /tmp/eqw_policy (seed 0's trained model) sampled at lr 1e-20 so every side does the same work.
# Usage: eqw3.sh ROUND SIDE...
set -u
OUT=/tmp/eqwz; R=$1; shift
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /tmp/ci-clone/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwz_$3 > $OUT/$3.log 2>&1
  echo "round $R: $3 rc=$? $(date +%T)" >> $OUT/order.txt
}
for side in "$@"; do
  case $side in
    unpadded) run /tmp/wt_new /tmp/eqw_recipe40cgb_lr20.yaml unpadded_$R ;;
    old) run /tmp/wt_main /tmp/eqw_recipe40cgb_lr20.yaml old_$R ;;
    before) run /tmp/wt_before /tmp/eqw_recipe40_lr20.yaml before_$R ;;
  esac
done
