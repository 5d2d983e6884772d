import time, torch
from r1train.fused_head import head_logprobs
torch.manual_seed(0)
K, H, V = 1800, 576, 49152
w = torch.nn.Parameter(torch.randn(V, H) * 0.02)
hid = torch.randn(K, H, requires_grad=True)
y = torch.randint(0, V, (K,))
def run(chunk):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, ent = head_logprobs(hid, w, y, 1.0, True, chunk)
    (lp.sum()).backward()
    w.grad = None; hid.grad = None
for chunk in (1024, 512, 2048, 1024, 512, 2048):
    run(chunk)
    t = time.perf_counter()
    for _ in range(3): run(chunk)
    print(chunk, f"{(time.perf_counter() - t) / 3:.3f} s")
