#!/bin/bash
# Equal-work 40-step runs with the fixed policy at lr 1e-20 (1e-30 made AdamW's updates denormal floats:
# 0.21 against 0.087 s a step). Sides: the code before issue 21 (c5040b4), main before the sampler's short way
# (1d2aaae, "prev") and with it (ea81365, "new"), and with the written-out attention backward too ("new2"), the main sides as the main recipe runs them (compiled,
# checkpointed activations, background checkpoints). Usage: eqwd.sh ROUND SIDE... (sides in the order given).
set -u
OUT=/work/notes/runs/eqwd
R=$1; shift
run() {  # tree recipe tag
  cd $1 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run $2 --fresh --set run_name=eqwd_$3 > $OUT/$3.log 2>&1
  echo "round $R: $3 rc=$? $(date +%T)" >> $OUT/order.txt
}
for side in "$@"; do
  case $side in
    before) run /tmp/wt_before /tmp/eqw_recipe40_lr20.yaml before_$R ;;
    prev) run /tmp/wt_prev /tmp/eqw_recipe40cgb_lr20.yaml prev_$R ;;
    new) run /tmp/wt_new /tmp/eqw_recipe40cgb_lr20.yaml new_$R ;;
    new2) run /tmp/wt_new2 /tmp/eqw_recipe40cgb_lr20.yaml new2_$R ;;
    final) run /tmp/wt_final /tmp/eqw_recipe40cgb_lr20.yaml final_$R ;;
    new2thp) export THP_MEM_ALLOC_ENABLE=1; run /tmp/wt_new2 /tmp/eqw_recipe40cgb_lr20.yaml new2thp_$R; unset THP_MEM_ALLOC_ENABLE ;;
  esac
done
