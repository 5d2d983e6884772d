#!/bin/bash
set -u
OUT=/tmp/eqw5
run() {  # tag, env...
  tag=$1; shift
  cd /tmp/wt_exp && env "$@" /usr/bin/time -v /tmp/ci-clone/.venv/bin/python -m r1train.cli run /tmp/eqw_recipe40cgb_lr20.yaml --fresh --set run_name=eqw5_$tag > $OUT/$tag.log 2>&1
  echo "exp: $tag rc=$? $(date +%T)" >> $OUT/order.txt
}
run notrim EXP_NO_SLEEP_TRIM=1 EXP_NO_WAKE_TRIM=1
run nosleeptrim EXP_NO_SLEEP_TRIM=1
