#!/bin/bash
# usage: rss_watch.sh PID OUT — RSS of PID every 2 s (MiB), with a timestamp, until it exits
pid=$1; out=$2
while kill -0 $pid 2>/dev/null; do
  rss=$(awk '/VmRSS/{print int($2/1024)}' /proc/$pid/status 2>/dev/null)
  echo "$(date +%s) $rss" >> $out
  sleep 2
done
