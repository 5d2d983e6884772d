#!/bin/bash
# Equal-work pair: the recipe as it was when issue 21 was filed, run by the code before the issue (c5040b4, /tmp/wt_before)
# and by main, both sampling from one fixed policy (a model the current main recipe trained; learning rate 1e-30 keeps it
# fixed), so both sides generate and learn the same work in expectation. Order A B B A.
set -u
POLICY=$1; STEPS=$2; OUT=/work/notes/runs/eqw
mkdir -p $OUT
sed -e "s#name: smollm2-135m-instruct#name: $POLICY#" -e "s#steps: 100#steps: $STEPS#" -e "s#learning_rate: 3.0e-5#learning_rate: 1.0e-30#" /tmp/old_recipe.yaml > /tmp/eqw_recipe.yaml
run() {  # side tree tag
  cd $2 && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run /tmp/eqw_recipe.yaml --fresh --set run_name=eqw_$3 > $OUT/$3.log 2>&1
  echo "$3 rc=$? $(date +%T)" >> $OUT/order.txt
}
date +%T > $OUT/order.txt
run before /tmp/wt_before before_1
run after /work/main after_1
run after /work/main after_2
run before /tmp/wt_before before_2
