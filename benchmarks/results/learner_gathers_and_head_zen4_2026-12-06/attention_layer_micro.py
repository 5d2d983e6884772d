"""One decoder layer's unpadded attention (gathers, matmul attention, output gather), compiled,
forward and backward, at the main recipe's rows (16 prompts sharing 62 tokens, 8 completions of
12-30 each: 3,200 tokens in 129 rows of 32 queries and 111 keys); random q, k, v in fp32 under bf16
autocast, as the rotary embedding hands them over. Times the code the tree on PYTHONPATH holds:

    PYTHONPATH=<tree> .venv/bin/python attention_layer_micro.py 40 [prof]
"""
import sys, time, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/, for bench_learner
from bench_learner import make_batch
import r1train.unpadded_rows as ur
torch.manual_seed(0)
batch = make_batch(16, 8, (77, 79), (12, 30), 49152, shared_prefix=62)
packs = [list(range(i * 8, (i + 1) * 8)) for i in range(16)]
sb = ur.pack_unpadded(batch.prompt_ids, batch.completion_ids, packs, 0, torch.device("cpu"), 32)
T = sb.input_ids.shape[1]
lay = sb.layout
print("T", T, "rows", tuple(lay["row_queries"].shape), "keys", tuple(lay["row_keys"].shape))
mask = sb.attention_mask
def f(q, k, v):
    return ur.unpadded_attention(None, q, k, v, mask, scaling=0.125, **lay)[0]
cf = torch.compile(f, dynamic=False)
q = torch.randn(1, 9, T, 64, requires_grad=True); k = torch.randn(1, 3, T, 64, requires_grad=True); v = torch.randn(1, 3, T, 64, requires_grad=True)
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cf(q, k, v)
    out.float().sum().backward()
for _ in range(3): step()
ts = []
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
ts.sort(); print(f"fwd+bwd median {ts[len(ts)//2]*1e3:.1f} ms, best {ts[0]*1e3:.1f} ms")
if "prof" in sys.argv:
    with torch.profiler.profile() as p:
        for _ in range(5): step()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=110))
