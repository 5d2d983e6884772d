# Run from the repository root with .venv/bin/python; needs /tmp/eqw_policy (notes: a trained checkpoint of the main recipe as an HF folder).
"""Probe: n-gram speculative decoding in the colocated engine, same prompts, one setting per process."""
# Ran before the inverse-CDF sampler existed: `python ngram_speculation_probe.py base 8` and `... ngram:4:4 8`, the latter also with TAILS=0 and with TAILS=0 NK=0.
import json, sys, time, os
import vllm
setting = sys.argv[1]
calls = int(sys.argv[2])
orig = vllm.LLM
def patched(**options):
    if setting.startswith("ngram"):
        _, k, nmax = setting.split(":")
        options["speculative_config"] = {"method": "ngram", "num_speculative_tokens": int(k),
                                         "prompt_lookup_max": int(nmax), "prompt_lookup_min": 2}
    return orig(**options)
vllm.LLM = patched
import torch
from transformers import AutoTokenizer
from r1train.config import load_recipe
from r1train.data import PromptSampler, load_rows
from r1train.prompts import encode_prompt
from r1train.engines.vllm_engine import VLLMEngine
from r1train.engines.base import SamplingSettings
recipe = load_recipe("/work/main/benchmarks/results/main_command_equal_work_tied_2026-12-05/recipe_40_steps_compiled_checkpointing.yaml")
data, r = recipe.data, recipe.rollout
tok = AutoTokenizer.from_pretrained("/tmp/eqw_policy")
sampler = PromptSampler(load_rows(data.train), recipe.seed, data.shuffle)
t = time.perf_counter()
eng = VLLMEngine("/tmp/eqw_policy", tok, seed=0, kv_cache_gib=0.5, max_model_len=data.max_prompt_tokens + r.max_new_tokens, share_prompt_tails=os.environ.get("TAILS","1")=="1", cpu_norm_kernels=os.environ.get("NK","1")=="1")
print(json.dumps({"start": time.perf_counter() - t}), flush=True)
s = SamplingSettings(max_new_tokens=r.max_new_tokens, temperature=1.0, stop=list(r.stop))
for c in range(calls):
    prompts = [encode_prompt(tok, row[data.question_column], data.prompt_template, data.system_prompt)
               for row in sampler.next_batch(r.prompts_per_step)]
    eng.llm.reset_prefix_cache()
    t = time.perf_counter()
    out = eng.generate(prompts, r.group_size, s)
    sec = time.perf_counter() - t
    lens = [len(o.token_ids) for o in out]
    lp = [sum(o.logprobs) for o in out]

    print(json.dumps({"call": c, "s": round(sec, 3), "tokens": sum(lens), "max": max(lens), "mean_lp_per_tok": sum(lp) / sum(lens)}), flush=True)
