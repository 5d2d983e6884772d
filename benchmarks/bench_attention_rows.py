"""What an unpadded attention row costs on a CPU, torch's sdpa kernel beside the matmul attention the
learner runs there, and the fit behind r1train/unpadded_rows.py's ROW_COST_PAIRS and QUERY_COST_PAIRS.

    .venv/bin/python benchmarks/bench_attention_rows.py

Times both (forward twice and backward once, as a gradient-checkpointed learner runs a layer's
attention) on bf16 rows of the 135M model's attention (9 query heads and 3 key-value heads of 64,
a causal bool mask) at row shapes [R rows, Lq queries, Lk keys] like those the learner's three
workloads produce: sdpa as transformers calls it (key-value heads repeated), and
`attention_in_matmuls` compiled with dynamic shapes, as the compiled decoder layers run it. Then fits
time = a*R + b*R*Lq + c*R*Lq*Lk to the matmul attention's times by least squares and prints a/c and
b/c: the cost of a row and of a query slot in units of one query-key pair, the constants the row
planner uses. The fit's largest error is printed with it; on another machine the constants may differ.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

# (rows, queries, keys): whole packs as rows (the learner before its rows had a width of their
# own) and narrower rows, at the main recipe's, the equal-work recipe's and bench_vs_trl's shapes.
SHAPES = [(8, 192, 227), (10, 256, 291), (17, 192, 254), (18, 192, 254), (4, 512, 542), (6, 512, 542),
          (67, 32, 83), (67, 32, 115), (134, 16, 67), (130, 32, 110), (74, 32, 136), (40, 64, 170),
          (30, 64, 115), (22, 96, 147), (58, 64, 142), (18, 128, 168), (34, 64, 104)]


def time_rows(attend, rows: int, queries: int, keys: int, repeats: int, heads: int = 9, key_heads: int = 3,
              dim: int = 64) -> float:
    """Median seconds of two forward passes and one backward pass of `attend` on these rows."""
    q = torch.randn(rows, heads, queries, dim, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(rows, key_heads, keys, dim, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(rows, key_heads, keys, dim, dtype=torch.bfloat16, requires_grad=True)
    mask = torch.ones(rows, 1, queries, keys, dtype=torch.bool).tril(diagonal=keys - queries)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up (and compiles)
        start = time.perf_counter()
        with torch.no_grad():
            attend(q, k, v, mask)  # the checkpoint's recomputation
        attend(q, k, v, mask).sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def sdpa(q, k, v, mask):
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    from r1train.unpadded_rows import QUERY_COST_PAIRS, ROW_COST_PAIRS, attention_in_matmuls

    matmuls = torch.compile(attention_in_matmuls, dynamic=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    measured = []
    for rows, queries, keys in SHAPES:
        kernel = time_rows(sdpa, rows, queries, keys, args.repeats)
        seconds = time_rows(matmuls, rows, queries, keys, args.repeats)
        measured.append(seconds)
        print(f"  rows {rows:4d} x queries {queries:4d} x keys {keys:4d}: sdpa {kernel * 1e3:7.1f} ms, "
              f"matmuls {seconds * 1e3:7.1f} ms ({seconds / kernel:.2f}x)")
    terms = torch.tensor([[r, r * q, r * q * k] for r, q, k in SHAPES], dtype=torch.float64)
    times = torch.tensor(measured, dtype=torch.float64).unsqueeze(1)
    (per_row, per_query, per_pair), = torch.linalg.lstsq(terms, times).solution.T.tolist()
    fitted = terms @ torch.tensor([per_row, per_query, per_pair], dtype=torch.float64)
    worst = ((fitted - times.squeeze(1)).abs() / times.squeeze(1)).max().item()
    print(f"fit: a row costs {per_row / per_pair:.0f} pairs, a query slot {per_query / per_pair:.0f} pairs "
          f"(a pair {per_pair * 1e9:.2f} ns); largest error {worst:.0%}")
    print(f"r1train/unpadded_rows.py uses: a row {ROW_COST_PAIRS} pairs, a query slot {QUERY_COST_PAIRS} pairs")


if __name__ == "__main__":
    main()
