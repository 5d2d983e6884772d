#!/bin/bash
# Equal-work runs, session 29: matmul attention rows (wt_new, b48a0be), main before this session
# (wt_head, 7c2f4ea), the code before issue 21 (wt_before, c5040b4); one after the other, alone.
set -u
OUT=/tmp/s29/eqw; R=$1; shift
run() {
  cd $1 && /usr/bin/time -v /tmp/ci-clone/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqw6_$3 > $OUT/$3.log 2>&1
  echo "round $R: $3 rc=$? $(date +%T)" >> $OUT/order.txt
  cp $1/runs/eqw6_$3/metrics.jsonl $OUT/metrics_$3.jsonl
}
for side in "$@"; do
  case $side in
    new) run /tmp/s29/wt_new /tmp/eqw_recipe40cgb_lr20.yaml new_$R ;;
    head) run /tmp/s29/wt_head /tmp/eqw_recipe40cgb_lr20.yaml head_$R ;;
    before) run /tmp/s29/wt_before /tmp/eqw_recipe40_lr20.yaml before_$R ;;
  esac
done
