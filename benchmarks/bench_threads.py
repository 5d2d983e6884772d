"""How OpenMP's wait policy and the thread count behave when other work shares the cores.

Each configuration runs in a fresh process (OpenMP reads its settings when torch loads): a
decode-like loop of small bf16 operators (a 64-row batch through 30 MLP blocks of the 135M
model's width), timed per iteration. With `--competitor`, one busy Python loop runs beside it.
Configurations alternate, `--repeats` times, since the machine may be shared.

    .venv/bin/python benchmarks/bench_threads.py
    .venv/bin/python benchmarks/bench_threads.py --repeats 3 --competitor
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

LOOP = """
import time, torch
torch.set_num_threads({threads})
x = torch.randn(64, 576, dtype=torch.bfloat16)
up, down = torch.randn(1536, 576, dtype=torch.bfloat16), torch.randn(576, 1536, dtype=torch.bfloat16)
def iteration():
    for _ in range(30):
        h = torch.nn.functional.silu(torch.nn.functional.linear(x, up))
        torch.nn.functional.layer_norm(torch.nn.functional.linear(h, down), (576,))
for _ in range(5):
    iteration()
start = time.perf_counter()
for _ in range(40):
    iteration()
print((time.perf_counter() - start) / 40 * 1000)
"""

# GNU OpenMP's default: a waiting thread spins 300,000 times before it sleeps; GOMP_SPINCOUNT
# shortens that spin, PASSIVE drops it, ACTIVE spins without end.
CONFIGS = {"default (spin)": {}, "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
           "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
           **{f"GOMP_SPINCOUNT={n}": {"GOMP_SPINCOUNT": str(n)} for n in (1000, 3000, 5000, 10000, 30000)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS to run")
    parser.add_argument("--competitor", action="store_true", help="run one busy Python loop alongside")
    args = parser.parse_args()
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.competitor else None
    try:
        for repeat in range(args.repeats):
            for threads in args.threads.split(","):
                for name in args.configs.split(","):
                    env = CONFIGS[name]
                    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")}
                    out = subprocess.run([sys.executable, "-c", LOOP.format(threads=int(threads))], env={**base, **env},
                                         capture_output=True, text=True, check=True)
                    print(f"repeat {repeat + 1}  threads {threads}  {name:26s} {float(out.stdout):8.1f} ms/iteration"
                          f"  (load average {os.getloadavg()[0]:.1f}, competitor: {'yes' if competitor else 'no'})", flush=True)
    finally:
        if competitor is not None:
            competitor.kill()


if __name__ == "__main__":
    main()
