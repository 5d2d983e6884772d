#!/bin/bash
# Equal-work 40-step runs on the Zen 4 machine: the code before issue 21 (c5040b4) and main (c041fda),
# each from its own git worktree, the fixed policy /tmp/eqw_policy (seed 0's trained model) at lr 1e-20.
# Usage: eqwz.sh ROUND SIDE... (sides in the order given).
set -u
OUT=/tmp/eqwz
R=$1; shift
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /tmp/ci-clone/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwz_$3 > $OUT/$3.log 2>&1
  echo "round $R: $3 rc=$? $(date +%T)" >> $OUT/order.txt
}
for side in "$@"; do
  case $side in
    before) run /tmp/wt_before /tmp/eqw_recipe40_lr20.yaml before_$R ;;
    main) run /tmp/wt_main /tmp/eqw_recipe40cgb_lr20.yaml main_$R ;;
  esac
done
