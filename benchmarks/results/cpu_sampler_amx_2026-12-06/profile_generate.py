# Run from the repository root with .venv/bin/python; needs /tmp/eqw_policy (notes: a trained checkpoint of the main recipe as an HF folder).
import json, sys, time, os
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
eng = VLLMEngine("/tmp/eqw_policy", tok, seed=0, kv_cache_gib=0.5, max_model_len=data.max_prompt_tokens + r.max_new_tokens)
s = SamplingSettings(max_new_tokens=r.max_new_tokens, temperature=1.0, stop=list(r.stop))
def call():
    prompts = [encode_prompt(tok, row[data.question_column], data.prompt_template, data.system_prompt)
               for row in sampler.next_batch(r.prompts_per_step)]
    eng.llm.reset_prefix_cache()
    t = time.perf_counter(); out = eng.generate(prompts, r.group_size, s); return time.perf_counter() - t, out
call(); call()
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as p:
    tot = 0
    for i in range(4):
        sec, out = call(); tot += sec
        print(sec, sum(len(o.token_ids) for o in out), max(len(o.token_ids) for o in out))
print("total", tot)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
