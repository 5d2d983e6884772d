"""One operator over 12 new shapes, the RSS after each: `sdpa` (masked CPU flash attention, bf16, fwd +
bwd, rows of length L) or `mm` (a 576 -> 1536 linear under bf16 autocast, 8*L rows).
.venv/bin/python benchmarks/results/kernel_caches_amx_2026-12-05/one_op.py sdpa|mm
"""
import torch, os, sys
import torch.nn.functional as F
from r1train.heap import return_free_memory
def rss():
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * 4096 / 2**20
what = sys.argv[1]
w = torch.randn(1536, 576, requires_grad=True)
for i, L in enumerate(range(200, 200 + 12 * 17, 17)):
    if what == "sdpa":
        q = torch.randn(8, 9, L, 64, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(8, 9, L, 64, dtype=torch.bfloat16, requires_grad=True)
        m = torch.ones(L, L, dtype=torch.bool).tril().expand(8, 1, L, L)
        F.scaled_dot_product_attention(q, k, k, attn_mask=m).float().sum().backward()
    else:
        x = torch.randn(8 * L, 576, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = x @ w.T
        y.float().sum().backward()
    return_free_memory()
    print(f"{L}: {rss():.0f}", end="  ", flush=True)
print()
