#!/bin/bash
until grep -q "^exit " /tmp/s33/main_cmd.log 2>/dev/null; do sleep 10; done
cd /work/main
PYTHON=/tmp/ci-s33/.venv/bin/python benchmarks/equal_work.sh /tmp/s33/eqw 3 \
  new=/tmp/s33/wt_new:/tmp/s33/recipe_new.yaml before=/tmp/s33/wt_before:/tmp/s33/recipe_before.yaml
echo round3 done >> /tmp/s33/eqw/order.txt
