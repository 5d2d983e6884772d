# Run from the repository root with .venv/bin/python (TRIM=MiB MMAP=MiB set glibc's trim and mmap thresholds first).
# Ran at a3af7a2, before heap.keep_freed_memory: TRIM unset, TRIM=1024 MMAP=32, TRIM=1024 MMAP=4, TRIM=128 MMAP=32.
import os, time, torch
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
import vllm
from transformers import AutoTokenizer
from r1train.models import resolve_model_dir
from r1train.engines.vllm_engine import VLLMEngine
md = resolve_model_dir("smollm2-135m-instruct")
tok = AutoTokenizer.from_pretrained(md)
import ctypes
if os.environ.get("TRIM"):
    libc = ctypes.CDLL("libc.so.6"); print("mallopt", libc.mallopt(-1, int(os.environ["TRIM"]) << 20), libc.mallopt(-3, int(os.environ.get("MMAP", "32")) << 20))
eng = VLLMEngine(md, tok, seed=0, kv_cache_gib=0.5, max_model_len=512)
runner = eng.llm.collective_rpc(lambda w: w.model_runner)[0]
acc = {}
def wrap(obj, attr, name):
    f = getattr(obj, attr)
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); acc[name] = acc.get(name, 0) + time.perf_counter() - t; return r
    setattr(obj, attr, g)
s = runner.sampler
wrap(s, "forward", "sampler_total"); wrap(s, "compute_logprobs", "log_softmax"); wrap(s, "gather_logprobs", "gather"); wrap(s.topk_topp_sampler, "forward", "draw")
wrap(runner, "_model_forward", "model_forward")
prompts = [tok.apply_chat_template([{"role": "user", "content": f"What is {i} + {i+3}?"}], add_generation_prompt=True)["input_ids"] for i in range(16)]
params = vllm.SamplingParams(n=8, max_tokens=64, ignore_eos=True, temperature=1.0, logprobs=0)
import resource
for i in range(3):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    acc.clear(); t = time.perf_counter(); eng.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False); print("call", round(time.perf_counter() - t, 3), "faults", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, {k: round(v, 3) for k, v in acc.items()})
