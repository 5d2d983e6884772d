"""Rollout throughput: the HF engine against the colocated vLLM engine, same prompts and settings.

Both engines sample `--samples` completions for each of `--prompts` small-addition questions,
chat-formatted with an R1-Zero style system prompt and `<think>` prefilled, at temperature 1 up to
`--max-new-tokens` tokens or "</answer>". Throughput is generated tokens (EOS included) divided by
the wall time of the generate() call; vLLM's start-up and one short warm-up call are timed apart.
Both follow the trainer's dtype policy: bf16 (HF: autocast over fp32 weights; vLLM: bf16
weights) where the hardware computes in bf16 natively, fp32 elsewhere; `--hf-fp32` forces fp32
on the HF side.

Prefill alone (one new token) is timed twice, with `--samples` completions a prompt and with
one: vLLM shares a prompt's full KV blocks between its samples but computes the prompt's last,
partial block once per sample (its V1 engine has no copy-on-write of a partial block), so the gap
between the two is what a group's samples pay for recomputing their prompt's tail.

It also measures what the trainer sees after a sync: the time to push the learner's weights into
vLLM, and how far vLLM's log-probs of its own samples are from the learner's (fp32 weights, bf16
autocast where native, one teacher-forced pass per completion): the figures behind sync_check's bound.

    .venv/bin/python benchmarks/bench_generation.py
    .venv/bin/python benchmarks/bench_generation.py --model-dir PATH --prompts 4 --samples 4

HF runs first: vLLM's CPU worker, once started in this process, manages torch's CPU threads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

import torch

from r1train.engines.base import SamplingSettings
from r1train.engines.sync_check import compare_logprobs

SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively."
)


def build_prompts(tokenizer, count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": f"What is {a} + {b}?"}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
        prompts.append(ids + tokenizer.encode("<think>", add_special_tokens=False))
    return prompts


def timed_generate(engine, prompts, n, sampling) -> tuple[list, float, int]:
    start = time.perf_counter()
    completions = engine.generate(prompts, n, sampling)
    seconds = time.perf_counter() - start
    return completions, seconds, sum(len(c.token_ids) for c in completions)


def prefill_seconds(engine, prompts, samples: int) -> dict[str, float]:
    """Time of a generate call that samples one token: `samples` completions a prompt, then one."""
    one_token = SamplingSettings(max_new_tokens=1, temperature=1.0)
    out = {}
    for n in (samples, 1):
        start = time.perf_counter()
        engine.generate(prompts, n, one_token)
        out[f"{n} a prompt"] = round(time.perf_counter() - start, 2)
    return out


def learner_logprobs(model, completions, bf16: bool) -> list[torch.Tensor]:
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for c in completions:
            ids = torch.tensor([c.prompt_token_ids + c.token_ids])
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            start = len(c.prompt_token_ids)
            out.append(logprobs[start - 1 : -1].gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1))
    return out


def summary(name: str, completions, seconds: float, tokens: int) -> dict:
    return {
        "engine": name,
        "sequences": len(completions),
        "generated_tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "truncated_frac": round(sum(c.truncated for c in completions) / len(completions), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None, help="safetensors folder (default: the converted default model)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--hf-batch-size", type=int, default=64)
    parser.add_argument("--hf-fp32", action="store_true", help="run the HF engine without bf16 autocast")
    parser.add_argument("--kv-cache-gib", type=float, default=2.0)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    from r1train.engines import make_engine
    from r1train.hardware import bf16_autocast_supported
    from r1train.models import DEFAULT_MODEL, load_model, load_tokenizer, resolve_model_dir

    model_dir = args.model_dir or resolve_model_dir(DEFAULT_MODEL)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).eval()
    prompts = build_prompts(tokenizer, args.prompts)
    sampling = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=1.0, stop=["</answer>"])
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "model_dir": str(model_dir),
        "settings": {"prompts": args.prompts, "samples": args.samples, "max_new_tokens": args.max_new_tokens,
                     "prompt_tokens": [min(map(len, prompts)), max(map(len, prompts))],
                     "temperature": 1.0, "stop": ["</answer>"]},
        "runs": [],
    }

    native_bf16 = bf16_autocast_supported(torch.device("cpu"))
    if not args.skip_hf:
        hf_bf16 = native_bf16 and not args.hf_fp32
        hf = make_engine("hf", model, model_dir, tokenizer, batch_size=args.hf_batch_size, seed=0,
                         autocast_dtype=torch.bfloat16 if hf_bf16 else None)
        completions, seconds, tokens = timed_generate(hf, prompts, args.samples, sampling)
        label = "hf (bf16 autocast)" if hf_bf16 else "hf (fp32)"
        results["runs"].append(summary(label, completions, seconds, tokens))
        print(results["runs"][-1], flush=True)

    start = time.perf_counter()
    vllm_engine = make_engine("vllm", model, model_dir, tokenizer, seed=0, kv_cache_gib=args.kv_cache_gib,
                              max_model_len=max(len(p) for p in prompts) + args.max_new_tokens)
    results["vllm_startup_s"] = round(time.perf_counter() - start, 1)
    vllm_engine.generate(prompts[:1], 1, SamplingSettings(max_new_tokens=8))  # warm-up, untimed
    completions, seconds, tokens = timed_generate(vllm_engine, prompts, args.samples, sampling)
    vllm_dtype = str(vllm_engine.dtype).removeprefix("torch.")
    results["runs"].append(summary(f"vllm (in-process, {vllm_dtype})", completions, seconds, tokens))
    print(results["runs"][-1], flush=True)
    results["vllm_prefill_s"] = prefill_seconds(vllm_engine, prompts, args.samples)
    print({"vllm prefill alone (1 new token), s": results["vllm_prefill_s"]}, flush=True)

    start = time.perf_counter()
    vllm_engine.sync_weights(model)
    results["vllm_sync_s"] = round(time.perf_counter() - start, 2)
    diff = compare_logprobs([c.logprobs for c in completions], learner_logprobs(model, completions, native_bf16))
    results["vllm_vs_learner_logprob_abs_diff"] = {k: round(v, 4) for k, v in diff.items()}

    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
