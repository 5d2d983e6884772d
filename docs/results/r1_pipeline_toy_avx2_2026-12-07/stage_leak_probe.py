"""What a GRPO stage leaves alive in the process after run_grpo returns (RSS, live tensors, trainer
objects), and after `release_finished_stage`. A 2-step run of the main recipe at 4 prompts a step.

usage, in the project folder (PYTHONPATH makes the script import that tree's r1train):
    PYTHONPATH=. .venv/bin/python docs/results/r1_pipeline_toy_avx2_2026-12-07/stage_leak_probe.py
Output of the run at 1f8c608: stage_leak_probe.txt. Before r1train/stage_memory.py existed, the
same run without its last four lines found the trainer kept by the traceback of
`vllm.multimodal.media.audio._torchcodec_import_exc` (gc.get_referrers from the trainer up).
"""
import gc
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from r1train.config import load_recipe
from r1train.grpo import run_grpo


def rss_mib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024


def live_tensor_mib():
    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                storage = obj.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
        except Exception:
            pass
    return total // 2**20


def alive(names):
    counts = {}
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in names:
            counts[name] = counts.get(name, 0) + 1
    return counts


recipe = load_recipe("recipes/r1_zero_toy.yaml", ["training.steps=2", "evaluation.every=100", "evaluation.at_end=false",
                                                  "rollout.prompts_per_step=4"] + sys.argv[1:])
print("before", rss_mib(), "MiB rss", live_tensor_mib(), "MiB tensors", flush=True)
run_dir = Path(tempfile.mkdtemp(prefix="stage_leak_probe_"))
run_grpo(recipe, run_dir)
shutil.rmtree(run_dir)
print("after return", rss_mib(), "MiB rss", live_tensor_mib(), "MiB tensors", flush=True)
gc.collect()
print("after gc", rss_mib(), "MiB rss", live_tensor_mib(), "MiB tensors", flush=True)
print(alive({"GRPOTrainer", "PolicyLearner", "VLLMEngine", "LlamaForCausalLM", "LLM", "AdamW", "PolicyScorer", "Optimiser"}))


from r1train.stage_memory import release_finished_stage
print("tracebacks dropped", release_finished_stage())
print("after release_finished_stage", rss_mib(), "MiB rss", live_tensor_mib(), "MiB tensors", flush=True)
print(alive({"GRPOTrainer", "PolicyLearner", "VLLMEngine", "LlamaForCausalLM", "LLM", "AdamW", "PolicyScorer", "Optimiser"}))
