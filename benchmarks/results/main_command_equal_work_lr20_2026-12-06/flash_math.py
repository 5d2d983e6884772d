import time, torch, sys
sys.path.insert(0, '/work/main')
from r1train.packing import _packed_mask
from transformers.integrations.sdpa_attention import sdpa_attention_forward
torch.manual_seed(0); torch.set_num_threads(2)
R, S = 8, 8
rows = []
for r in range(R):
    s = [0] * int(torch.randint(95, 106, ()))
    for j in range(1, S + 1): s += [j] * int(torch.randint(12, 31, ()))
    rows.append(s)
L = (max(map(len, rows)) + 31) // 32 * 32
seg = torch.tensor([s + [-1] * (L - len(s)) for s in rows])
H, KV, D = 9, 3, 64
class M: num_key_value_groups = 3; is_causal = True; training = True
mask = _packed_mask(seg, "sdpa")

class FlashForwardMathBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, scale, s_fp32):
        additive = torch.zeros(mask.shape, dtype=q.dtype).masked_fill_(~mask, float('-inf'))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=additive, scale=scale)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.scale, ctx.s_fp32 = scale, s_fp32
        return out
    @staticmethod
    def backward(ctx, dout):
        q, k, v, mask, out, lse = ctx.saved_tensors
        scale = ctx.scale
        if ctx.s_fp32:
            s = torch.matmul(q.float(), k.float().transpose(-1, -2))
        else:
            s = torch.matmul(q, k.transpose(-1, -2)).float()
        p = torch.exp(s * scale - lse.unsqueeze(-1)).masked_fill_(~mask, 0.0)
        dout = dout.contiguous()
        dv = torch.matmul(p.to(q.dtype).transpose(-1, -2), dout)
        dp = torch.matmul(dout, v.transpose(-1, -2)).float()
        delta = (dout.float() * out.float()).sum(-1, keepdim=True)
        ds = (p * (dp - delta)).to(q.dtype)
        dq = torch.matmul(ds, k) * scale
        dk = torch.matmul(ds.transpose(-1, -2), q) * scale
        return dq, dk, dv, None, None, None

def ours(q, k, v, s_fp32):
    k = k.repeat_interleave(3, 1); v = v.repeat_interleave(3, 1)
    return FlashForwardMathBackward.apply(q, k, v, mask, D ** -0.5, s_fp32).transpose(1, 2), None

def make():
    g = torch.Generator().manual_seed(1)
    q = (torch.randn(R, H, L, D, generator=g) * 2).to(torch.bfloat16).requires_grad_()
    k = (torch.randn(R, KV, L, D, generator=g) * 2).to(torch.bfloat16).requires_grad_()
    v = torch.randn(R, KV, L, D, generator=g).to(torch.bfloat16).requires_grad_()
    go = torch.randn(R, L, H, D, generator=g).to(torch.bfloat16)
    return q, k, v, go

def grads(fn, dtype=None):
    q, k, v, go = make()
    if dtype:
        q, k, v = (x.detach().to(dtype).requires_grad_() for x in (q, k, v)); go = go.to(dtype)
    o = fn(q, k, v)[0]; o.backward(go)
    return [x.grad.double() for x in (q, k, v)]

sd = lambda q, k, v: sdpa_attention_forward(M(), q, k, v, mask, scaling=D ** -0.5)
ref = grads(sd, torch.float64)
valid = (seg >= 0)
for name, fn in (("sdpa flash", sd), ("ours s fp32", lambda q, k, v: ours(q, k, v, True)), ("ours s bf16", lambda q, k, v: ours(q, k, v, False))):
    g = grads(fn)
    errs = [float((a - b)[valid[:, None, :, None].expand_as(a)].norm() / b[valid[:, None, :, None].expand_as(b)].norm()) for a, b in zip(g, ref)]
    print(f"{name:12s} rel err vs fp64: dq {errs[0]:.2e} dk {errs[1]:.2e} dv {errs[2]:.2e}")

def run(name, fn):
    q, k, v, go = make()
    tf, tb = [], []
    for _ in range(10):
        t0 = time.perf_counter(); o = fn(q, k, v)[0]; t1 = time.perf_counter(); o.backward(go); t2 = time.perf_counter()
        tf.append(t1 - t0); tb.append(t2 - t1)
    tf.sort(); tb.sort()
    print(f"{name:14s} fwd {tf[2]*1e3:6.2f} ms  bwd {tb[2]*1e3:6.2f} ms", flush=True)
for _ in range(2):
    run("sdpa", sd)
    run("ours s fp32", lambda q, k, v: ours(q, k, v, True))
    run("ours s bf16", lambda q, k, v: ours(q, k, v, False))
print("compiled:")
c32 = torch.compile(lambda q, k, v: ours(q, k, v, True), dynamic=False)
csd = torch.compile(sd, dynamic=False)
for _ in range(2):
    run("sdpa comp", csd)
    run("ours fp32 comp", c32)
g = grads(c32)
errs = [float((a - b).norm() / b.norm()) for a, b in zip(g, ref)]
print("compiled ours fp32 rel err (all positions)", errs)
