"""Does each GRPO stage leave memory behind? The main recipe's stage (2 steps, 4 prompts a step)
run N times (default 3) in one process, with the pipeline's release between, and after each: RSS,
its anonymous part, glibc's heap (in use / free / mmapped), and the bytes of live tensors (those
Python can see). At the end, a census of torch/vLLM/transformers objects still alive and what
refers to an embedding-shaped tensor. `clear` also empties vLLM's LAYERWISE_INFO after each stage
(the experiment that found it).

    PYTHONPATH=. .venv/bin/python docs/results/stage_creep_avx2_2026-12-07/creep_probe.py [N] [clear] [KEY=VALUE ...]
"""
import ctypes
import gc
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from r1train.config import load_recipe
from r1train.grpo import run_grpo
from r1train.stage_memory import release_finished_stage


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2


def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) // 1024


def live_tensors():
    seen, total, big = set(), 0, []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                storage = obj.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
                    if storage.nbytes() > 8 * 2**20:
                        big.append((storage.nbytes() // 2**20, tuple(obj.shape), str(obj.dtype)))
        except Exception:
            pass
    return total // 2**20, sorted(big, reverse=True)[:6]


def report(label):
    m = libc.mallinfo2()
    tensors, big = live_tensors()
    print(f"{label}: rss {status('VmRSS')} MiB (anon {status('RssAnon')}, file {status('RssFile')}), "
          f"heap in use {m.uordblks // 2**20} free {m.fordblks // 2**20} mmapped {m.hblkhd // 2**20} MiB, "
          f"tensors {tensors} MiB {big}", flush=True)


CLEAR = "clear" in sys.argv
if CLEAR:
    sys.argv.remove("clear")
stages = int(sys.argv.pop(1)) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3
recipe_args = ["training.steps=2", "evaluation.every=100", "evaluation.at_end=false",
               "rollout.prompts_per_step=4"] + sys.argv[1:]
report("start")
for stage in range(stages):
    run_dir = Path(tempfile.mkdtemp(prefix="creep_probe_"))
    run_grpo(load_recipe("recipes/r1_zero_toy.yaml", recipe_args), run_dir)
    shutil.rmtree(run_dir)
    release_finished_stage()
    report(f"after stage {stage + 1}")
    if "--clear" in sys.argv[1:] or CLEAR:
        from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO
        print("layerwise entries", len(LAYERWISE_INFO))
        LAYERWISE_INFO.clear()
        release_finished_stage()
        report(f"after stage {stage + 1}, vLLM's LAYERWISE_INFO cleared")


def chain(obj, depth=0, seen=None):
    """Print what refers to `obj`, up to 5 levels (frames and this module's lists skipped)."""
    seen = seen if seen is not None else {id(obj)}
    if depth == 5:
        return
    for ref in [r for r in gc.get_referrers(obj) if r is not embeddings][:8]:
        if id(ref) in seen or type(ref).__name__ in ("frame", "list") and depth == 0 and ref is not obj:
            continue
        seen.add(id(ref))
        desc = type(ref).__name__
        if isinstance(ref, dict):
            desc += " keys " + ",".join(str(k) for k in list(ref)[:6])
        print("  " * depth + "<- " + desc[:160], flush=True)
        chain(ref, depth + 1, seen)


def is_embedding(o):
    try:
        return type(o) in (torch.Tensor, torch.nn.Parameter) and tuple(o.shape) == (49152, 576)
    except Exception:
        return False


embeddings = [o for o in gc.get_objects() if is_embedding(o)]
kinds = {}
for o in gc.get_objects():
    name = str(type(o).__dict__.get("__module__", "")).split(".")[0] + "." + type(o).__name__
    if name.startswith(("torch.", "vllm.", "r1train.", "transformers.")):
        kinds[name] = kinds.get(name, 0) + 1
print(sorted(kinds.items(), key=lambda kv: -kv[1])[:40])
print(len(embeddings), "embedding-shaped tensors alive", [type(e).__name__ for e in embeddings])
if embeddings:
    chain(embeddings[0])
