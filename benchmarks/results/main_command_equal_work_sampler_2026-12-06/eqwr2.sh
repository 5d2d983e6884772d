#!/bin/bash
# Round 3, again for the code before: a 16 s pytest run overlapped before_3 at about 03:16 UTC.
set -u
OUT=/work/notes/runs/eqwr
while ! grep -q "^sampler_3" $OUT/order.txt 2>/dev/null; do sleep 3; done
cd /tmp/wt_before && /usr/bin/time -v /work/main/.venv/bin/python -m r1train.cli run /tmp/eqw_recipe40.yaml --fresh --set run_name=eqwr_before_3b > $OUT/before_3b.log 2>&1
echo "before_3b rc=$? $(date +%T)" >> $OUT/order.txt
