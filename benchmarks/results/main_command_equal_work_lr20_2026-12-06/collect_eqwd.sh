#!/bin/bash
# Gather the eqwd runs' metrics and /usr/bin/time -v lines into one folder for table.py.
DEST=${1:-/tmp/eqwd_tab}; mkdir -p $DEST; : > $DEST/time_v.txt
for log in /work/notes/runs/eqwd/*.log; do
  tag=$(basename $log .log)
  for tree in /tmp/wt_before /tmp/wt_prev /tmp/wt_new /tmp/wt_new2 /tmp/wt_final /work/main; do
    [ -f $tree/runs/eqwd_$tag/metrics.jsonl ] && cp $tree/runs/eqwd_$tag/metrics.jsonl $DEST/metrics_$tag.jsonl
  done
  grep -E "Elapsed|Maximum resident" $log | sed "s/^/$tag: /" >> $DEST/time_v.txt
done
cp /work/notes/runs/eqwd/order.txt $DEST/
