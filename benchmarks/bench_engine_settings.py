"""vLLM engine settings at a recipe's rollout shape: KV block size, eager against compiled, RMS-norm kernels, sampler.

Each setting runs in its own process (one vLLM engine each): the recipe's prompts, drawn by the
trainer's sampler with the recipe's seed, `prompts_per_step` prompts x `group_size` samples per
call, the recipe's sampling settings, and the prefix cache reset before every call (as after a
weight sync). The first call is a warm-up; the median of the others is reported, with the
start-up time. The base model samples longer completions than a trained one, so generation here
weighs decoding more than a training run's later steps do.

    .venv/bin/python benchmarks/bench_engine_settings.py recipes/r1_zero_toy.yaml
    .venv/bin/python benchmarks/bench_engine_settings.py RECIPE --settings 128:eager,32:eager,32:compiled --calls 5
    .venv/bin/python benchmarks/bench_engine_settings.py RECIPE --settings 32:eager:native,32:eager:kernels

A setting is BLOCK:MODE[:NORMS], BLOCK the KV block size in tokens (`default` = vLLM's own: 128 on
CPU, 16 on GPU), MODE `eager` or `compiled`, NORMS `native` (vLLM's own choice on CPU, the default
here) or `kernels` (vLLM's C++ RMS-norm kernels, as the trainer's colocated engine runs on CPU:
r1train/engines/cpu_kernels.py), SAMPLER `vllm` (vLLM's Gumbel-max kernel on CPU, the default here)
or `inverse_cdf` (r1train/engines/cpu_sampler.py). The trainer's CPU engine is
32:eager:kernels:inverse_cdf. Settings that draw differently sample different completions, and
a call's time follows its longest completion; `--fixed-length` makes every completion
`max_new_tokens` long (EOS and stop strings ignored), so each setting does the same work. The time
spent in the sampler's draw is printed too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_setting(recipe_path: str, block: str, mode: str, norms: str, draw: str, calls: int,
                fixed_length: bool) -> None:
    """One engine with one setting; prints a JSON line per call."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    import vllm
    from transformers import AutoTokenizer

    from r1train.config import load_recipe
    from r1train.data import PromptSampler, load_rows
    from r1train.engines.vllm_engine import engine_kv_cache_gib, native_engine_dtype
    from r1train.models import resolve_model_dir
    from r1train.prompts import encode_prompt

    recipe = load_recipe(recipe_path)
    data, rollout = recipe.data, recipe.rollout
    model_dir = resolve_model_dir(recipe.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sampler = PromptSampler(load_rows(data.train), recipe.seed, data.shuffle)
    kv_cache_gib = engine_kv_cache_gib(recipe, model_dir, on_cpu=True)
    options = dict(model=model_dir, dtype=native_engine_dtype(on_cpu=True), seed=recipe.seed,
                   max_model_len=data.max_prompt_tokens + rollout.max_new_tokens, enforce_eager=mode == "eager",
                   kv_cache_memory_bytes=int(kv_cache_gib * 1024**3), logprobs_mode="raw_logprobs")
    if block != "default":
        options["block_size"] = int(block)
    if norms == "kernels":
        from r1train.engines import cpu_kernels

        options["kernel_config"] = {"ir_op_priority": cpu_kernels.ir_op_priority()}
    start = time.perf_counter()
    llm = vllm.LLM(**options)
    if draw == "inverse_cdf":
        from r1train.engines.cpu_sampler import install_in_engine

        assert install_in_engine(llm)
    draw_seconds = time_the_draw(llm)
    print(json.dumps({"start_up_s": time.perf_counter() - start}), flush=True)
    params = vllm.SamplingParams(n=rollout.group_size, max_tokens=rollout.max_new_tokens,
                                 temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k,
                                 stop=None if fixed_length else list(rollout.stop) or None,
                                 ignore_eos=fixed_length, include_stop_str_in_output=True, logprobs=0)
    for call in range(calls):
        prompts = [encode_prompt(tokenizer, row[data.question_column], data.prompt_template, data.system_prompt)
                   for row in sampler.next_batch(rollout.prompts_per_step)]
        llm.reset_prefix_cache()  # as after every weight sync
        draw_seconds.clear()
        start = time.perf_counter()
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        seconds = time.perf_counter() - start
        lengths = [len(sample.token_ids) for request in outputs for sample in request.outputs]
        print(json.dumps({"call": call, "seconds": seconds, "tokens": sum(lengths),
                          "prompt_tokens": sum(map(len, prompts)) / len(prompts), "draw_s": sum(draw_seconds),
                          "cached_prompt_tokens": sum(r.num_cached_tokens or 0 for r in outputs)}), flush=True)


def time_the_draw(llm) -> list[float]:
    """Wrap the engine's sampler stage (top-k/top-p and the draw); returns the list it appends
    each call's seconds to."""
    seconds: list[float] = []
    stage = llm.collective_rpc(lambda worker: worker.model_runner.sampler.topk_topp_sampler)[0]
    forward = stage.forward

    def timed(*args):
        start = time.perf_counter()
        result = forward(*args)
        seconds.append(time.perf_counter() - start)
        return result

    stage.forward = timed
    return seconds


def parse_setting(setting: str) -> tuple[str, str, str, str]:
    """BLOCK:MODE[:NORMS[:SAMPLER]] as (block, mode, norms, sampler): "native" and "vllm" when left out."""
    parts = setting.split(":")
    parts += ["native", "vllm"][len(parts) - 2:]
    if (len(parts) != 4 or parts[1] not in ("eager", "compiled") or parts[2] not in ("native", "kernels")
            or parts[3] not in ("vllm", "inverse_cdf")):
        raise ValueError(f"setting {setting!r}: write BLOCK:MODE[:NORMS[:SAMPLER]], MODE eager or compiled, "
                         "NORMS native or kernels, SAMPLER vllm or inverse_cdf")
    return tuple(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--settings", default="default:eager,32:eager,32:compiled",
                        help="comma-separated BLOCK:MODE[:NORMS[:SAMPLER]] (default: %(default)s)")
    parser.add_argument("--calls", type=int, default=5, help="generate calls per setting, the first a warm-up")
    parser.add_argument("--fixed-length", action="store_true",
                        help="every completion max_new_tokens long (EOS and stop strings ignored)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this one setting in this process
    args = parser.parse_args()
    if args.one:
        run_setting(args.recipe, *parse_setting(args.one), args.calls, args.fixed_length)
        return

    print(f"recipe: {args.recipe}; {args.calls - 1} timed calls per setting after a warm-up"
          + ("; every completion max_new_tokens long" if args.fixed_length else ""))
    rows = []
    for setting in args.settings.split(","):
        try:
            parse_setting(setting)
        except ValueError as error:
            parser.error(str(error))
        command = [sys.executable, __file__, args.recipe, "--one", setting, "--calls", str(args.calls)]
        done = subprocess.run(command + ["--fixed-length"] * args.fixed_length, capture_output=True, text=True)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        calls = [line for line in lines if "call" in line][1:]
        if done.returncode or not calls:
            print(f"{setting}: failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
            continue
        seconds = statistics.median(c["seconds"] for c in calls)
        rows.append((setting, lines[0]["start_up_s"], seconds, sum(c["tokens"] for c in calls) / sum(c["seconds"] for c in calls),
                     statistics.mean(c["prompt_tokens"] for c in calls),
                     statistics.mean(c["cached_prompt_tokens"] for c in calls),
                     statistics.median(c["draw_s"] for c in calls)))
        print(f"  {setting}: " + ", ".join(f"{c['seconds']:.2f} s" for c in calls), flush=True)
    print(f"\n{'setting':28s} {'start-up s':>10s} {'median call s':>14s} {'tokens/s':>9s} "
          f"{'mean prompt tokens':>19s} {'cached prompt tokens/call':>26s} {'draw s/call':>12s}")
    for setting, start_up, seconds, rate, prompt_tokens, cached, draw in rows:
        print(f"{setting:28s} {start_up:10.1f} {seconds:14.2f} {rate:9.0f} {prompt_tokens:19.1f} {cached:26.0f} {draw:12.3f}")
    if rows:
        first = rows[0]
        for setting, _, seconds, *_ in rows[1:]:
            print(f"{setting} against {first[0]}: {first[2] / seconds:.2f}x faster per call")


if __name__ == "__main__":
    main()
