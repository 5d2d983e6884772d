#!/bin/bash
until grep -q "^before_1 " /tmp/s32/eqw/order.txt 2>/dev/null; do sleep 10; done
cd /work/main
PYTHON=/tmp/ci-s32/.venv/bin/python benchmarks/equal_work.sh /tmp/s32/eqw 2 \
  before=/tmp/s32/wt_before:/tmp/s32/recipe_before.yaml new=/tmp/s32/wt_new:/tmp/s32/recipe_new.yaml \
  nockpt=/tmp/s32/wt_new:/tmp/s32/recipe_nockpt.yaml
echo round2 done >> /tmp/s32/eqw/order.txt
