import sys, time, statistics
sys.path.insert(0, '/work/main/benchmarks'); sys.path.insert(0, '/work/main')
import torch
from bench_learner import load_model
from r1train.adamw_state import make_adamw
model, _ = load_model("config")
for lr in (1e-6, 2e-5, 1e-30):
    for threads in (2, 1):
        torch.set_num_threads(threads)
        params = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
        for p in params: p.grad = torch.randn_like(p) * 1e-3
        opt = make_adamw(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
        ts = []
        for _ in range(5):
            t = time.perf_counter(); opt.step(); ts.append(time.perf_counter() - t)
        print(f"lr {lr:g} threads {threads}: {statistics.median(ts[1:]):.3f} s", flush=True)
torch.set_num_threads(2)
