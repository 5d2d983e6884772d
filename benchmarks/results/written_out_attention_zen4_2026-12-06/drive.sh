#!/bin/bash
# Equal-work 40-step runs (fixed policy /tmp/eqw_policy, lr 1e-20) of main's code (/tmp/ci-clone at c041fda),
# with and without glibc malloc tunables. Usage: drive.sh SIDE...  (base | heap | heapthp)
set -u
OUT=/tmp/eqm
for side in "$@"; do
  case $side in
    base*) ENVV="" ;;
    thp*) ENVV="THP_MEM_ALLOC_ENABLE=1" ;;
    heap*) ENVV="GLIBC_TUNABLES=glibc.malloc.mmap_threshold=536870912:glibc.malloc.trim_threshold=1073741824" ;;
  esac
  cd /tmp/ci-clone && env $ENVV /usr/bin/time -v .venv/bin/python -m r1train.cli run /tmp/eqw_recipe40cgb_lr20.yaml --fresh --set run_name=eqm_$side > $OUT/$side.log 2>&1
  echo "$side rc=$? $(date +%T) env=$ENVV" >> $OUT/order.txt
done
