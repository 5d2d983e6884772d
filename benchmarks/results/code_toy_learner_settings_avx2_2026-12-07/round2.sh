#!/bin/bash
# Round 2 in the reverse order, after the KV-cache probe has finished.
until grep -q "^kv 0.5 " /tmp/s36/kv_order.txt 2>/dev/null; do sleep 10; done
cd /work/main
PYTHON=/tmp/ci-s38/.venv/bin/python benchmarks/equal_work.sh /tmp/s36/eqw 2 \
  nockpt=/tmp/s36/wt:/tmp/s36/code_nockpt.yaml new=/tmp/s36/wt:/tmp/s36/code_new.yaml \
  asis=/tmp/s36/wt:/tmp/s36/code_asis.yaml
echo round2 done >> /tmp/s36/eqw/order.txt
