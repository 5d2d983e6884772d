"""The output layer's forward and backward pass (r1train/fused_head.py) at the main recipe's 2,872
completion tokens, entropies computed and kept out of the loss as the learner does, bf16 autocast;
then its four matmuls alone (forward, recomputed, two gradients) in 256-row chunks:

    PYTHONPATH=<tree> .venv/bin/python head_micro.py [compiled] [prof]
"""
import time, torch, sys
from r1train.fused_head import head_logprobs
torch.manual_seed(0)
K, H, V = 2872, 576, 49152
hidden = (torch.randn(K, H) * 0.5).requires_grad_()
weight = (torch.randn(V, H) * 0.05).requires_grad_()
targets = torch.randint(0, V, (K,))
g = torch.randn(K)
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, _ = head_logprobs(hidden, weight, targets, 1.0, True, 512, compiled="compiled" in sys.argv)
    (lp * g).sum().backward()
    hidden.grad = None; weight.grad = None
for _ in range(2): step()
ts = []
for _ in range(6):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
ts.sort(); print(f"head fwd+bwd: median {ts[3]*1e3:.0f} ms best {ts[0]*1e3:.0f}")
hb = hidden.detach().bfloat16(); wb = weight.detach().bfloat16()
def mms():
    for s in range(0, K, 256):
        h = hb[s:s+256]; l = h @ wb.T  # fwd
        l2 = h @ wb.T  # recompute
        gh = l2 @ wb  # grad hidden
        gw = l2.T @ h  # grad weight
for _ in range(2): mms()
t = time.perf_counter(); mms(); print(f"its 4 matmuls alone: {(time.perf_counter()-t)*1e3:.0f} ms")
if "prof" in sys.argv:
    with torch.profiler.profile() as p: step()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
