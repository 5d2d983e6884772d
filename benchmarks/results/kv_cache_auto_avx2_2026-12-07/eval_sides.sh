#!/bin/bash
# r1train eval of the base model with each recipe's KV cache, one after the other, two rounds in opposite orders.
set -u
OUT=/tmp/kvm/eval; mkdir -p $OUT
PY=/tmp/ci-a/.venv/bin/python
run() {  # TAG RECIPE
  (cd /work/main && /usr/bin/time -v $PY -m r1train.cli eval --model smollm2-135m-instruct --data data/arithmetic/test.jsonl \
     --recipe "$2" --max-examples 200 --samples 4 --out $OUT/$1.json) > $OUT/$1.log 2>&1
  echo "$1 rc=$? $(date +%T)" >> $OUT/order.txt
  grep -E "Elapsed|Maximum resident" $OUT/$1.log | sed "s/^/$1: /" >> $OUT/time_v.txt
}
run auto_1 /tmp/kvm/auto.yaml; run fixed2_1 /tmp/kvm/fixed2.yaml
run fixed2_2 /tmp/kvm/fixed2.yaml; run auto_2 /tmp/kvm/auto.yaml
