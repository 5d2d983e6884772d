"""One layer's attention, forward and backward, over packed rows: sdpa under the 4-D mask against the
attempt's attention over the allowed pairs (needs attempt.patch applied). Arguments: rows,
completions a row, longest completion (defaults 8 8 30; a 60-token prompt, completions from 12).
The profile at the end is of the attempt's attention."""
import time, torch, sys
from r1train.packing import _packed_mask
from r1train.packed_attention import PackedRows, packed_rows_attention
from transformers.integrations.sdpa_attention import sdpa_attention_forward
torch.manual_seed(0); torch.set_num_threads(2)
R = int(sys.argv[1]) if len(sys.argv) > 1 else 8
S = int(sys.argv[2]) if len(sys.argv) > 2 else 8
hi = int(sys.argv[3]) if len(sys.argv) > 3 else 30
rows = []
for r in range(R):
    s = [0] * 60
    for j in range(1, S + 1): s += [j] * int(torch.randint(12, hi + 1, ()))
    rows.append(s)
L = max(map(len, rows)); seg = torch.tensor([s + [-1] * (L - len(s)) for s in rows])
H, KV, D = 9, 3, 64
class M: num_key_value_groups = 3; is_causal = True
mask = _packed_mask(seg, "sdpa"); layout = PackedRows.from_segments(seg)
print("rows", R, "length", L)
def run(name, fn):
    q = torch.randn(R, H, L, D, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(R, KV, L, D, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(R, KV, L, D, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(R, L, H, D, dtype=torch.bfloat16)
    tf, tb = [], []
    for _ in range(8):
        t0 = time.perf_counter(); o = fn(q, k, v)[0]; t1 = time.perf_counter(); o.backward(g); t2 = time.perf_counter()
        tf.append(t1 - t0); tb.append(t2 - t1)
    print(f"{name:8s} fwd {min(tf)*1e3:6.2f} ms  bwd {min(tb)*1e3:6.2f} ms  total {(min(tf)+min(tb))*1e3:6.2f}")
for _ in range(2):
    run("sdpa", lambda q, k, v: sdpa_attention_forward(M(), q, k, v, mask, scaling=D ** -0.5))
    run("packed", lambda q, k, v: packed_rows_attention(M(), q, k, v, mask, scaling=D ** -0.5, packed_rows=layout))
from torch.profiler import profile
q = torch.randn(R, H, L, D, dtype=torch.bfloat16, requires_grad=True)
k = torch.randn(R, KV, L, D, dtype=torch.bfloat16, requires_grad=True)
v = torch.randn(R, KV, L, D, dtype=torch.bfloat16, requires_grad=True)
g = torch.randn(R, L, H, D, dtype=torch.bfloat16)
with profile() as p:
    for _ in range(4):
        o = packed_rows_attention(M(), q, k, v, mask, scaling=D ** -0.5, packed_rows=layout)[0]; o.backward(g)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
