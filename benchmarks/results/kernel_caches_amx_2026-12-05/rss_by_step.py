"""Run a command (an r1train run) and print the process tree's largest RSS between successive lines of
its metrics.jsonl (a step or an evaluation), sampled every 50 ms.
.venv/bin/python benchmarks/results/kernel_caches_amx_2026-12-05/rss_by_step.py OUT_DIR .venv/bin/r1train run \
    recipes/r1_zero_toy.yaml --set output_dir=OUT_DIR logging.progress=false
"""
import subprocess, sys, time, psutil, os, json
out = sys.argv[1]; cmd = sys.argv[2:]
metrics = None
t0 = time.time()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
proc = psutil.Process(p.pid)
size = 0; seg_max = 0.0; seg_start = 0.0; peak = (0, 0)
def tree():
    procs = [proc] + proc.children(recursive=True)
    return sum(q.memory_info().rss for q in procs) / 2**30
while p.poll() is None:
    try: r = tree()
    except psutil.Error: r = 0
    seg_max = max(seg_max, r)
    if r > peak[1]: peak = (time.time() - t0, r)
    if metrics is None:
        for root, _, files in os.walk(out):
            if "metrics.jsonl" in files: metrics = os.path.join(root, "metrics.jsonl")
    if metrics and os.path.getsize(metrics) != size:
        size = os.path.getsize(metrics)
        last = json.loads(open(metrics).read().splitlines()[-1])
        what = "eval" if any(k.startswith("eval/") for k in last) else f"step {last.get('step')}"
        print(f"{seg_start:6.1f}-{time.time()-t0:6.1f} s: max {seg_max:.2f} GiB, ending with {what} logged", flush=True)
        seg_max = 0.0; seg_start = time.time() - t0
    time.sleep(0.05)
print(f"{seg_start:6.1f}-{time.time()-t0:6.1f} s: max {seg_max:.2f} GiB (to exit)")
print(f"peak {peak[1]:.2f} GiB at {peak[0]:.1f} s")
