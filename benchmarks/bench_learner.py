"""Learner throughput: r1train's PolicyLearner against a plain fp32 HF forward and backward.

Both sides train on the same GRPO-shaped batch (prompts x group size completions with realistic,
uneven lengths, every advantage non-zero so the learner cannot skip samples) and take one AdamW
step with gradient clipping. The baseline is what a straightforward trainer does: micro-batches of
a fixed number of sequences in batch order, padded to their longest row, full fp32 [b, L, V]
logits and a log-softmax over every position. The learner uses its defaults: length-sorted
token-budget micro-batches, each group's prompt run once for all its completions where that saves
work (`r1train/packing.py`), logits only at completion positions in checkpointed chunks, and bf16
autocast where the CPU or GPU has native bf16 (see `bf16_autocast_supported`). The side
`learner_unpacked` is the learner with `share_prompts=False`, one row per sample;
`learner_compiled` is the learner with its decoder layers compiled (`training.compile`,
`r1train/compiled_layers.py`; its warm-up pass includes the compile); `learner_keeping_mlp` is the
learner with `recompute_mlp_products=False`, its MLPs keeping all four intermediate tensors for
the backward pass (`r1train/mlp_recompute.py`): the time that recomputing two of them costs;
sides ending `_padded_rows` run the packed rows padded, as the learner did before unpadded
micro-batches (`r1train/unpadded_rows.py`). `--shared-prefix N` starts every prompt with the same
N tokens, as a system prompt and chat template do (62 of the R1-Zero toy recipe's 77-79).

    .venv/bin/python benchmarks/bench_learner.py            # real default model when installed
    .venv/bin/python benchmarks/bench_learner.py --model config --repeats 1
    # the R1-Zero toy recipe's shape: 16 x 8 samples, 77-79-token prompts sharing their first 62,
    # completions of 12-30 tokens; its learner (compiled, checkpointed) unpadded and padded
    .venv/bin/python benchmarks/bench_learner.py --prompts 16 --prompt-tokens 77,79 --shared-prefix 62 \
        --completion-tokens 12,30 --sides learner_compiled_checkpointing,learner_compiled_checkpointing_padded_rows

Tokens per second counts the real (unpadded) prompt and completion tokens of the batch. Runs
alternate between the two sides and the median is reported, since the machine is shared.

The same run measures the machine's matmul peak (the best of a few square matmuls in the dtype the
learner computes in: bf16 with native bf16, else fp32) and prints each side's share of it. A side's
FLOPs are its matmuls' forward and backward (6 per weight per token) over the tokens it computes
(a group's shared prompt once for the learner sides; the start all prompts share once in all
unless the side pads its rows), plus the output layer at the positions it scores
(every position for the baseline, completion positions for the learner); attention scores,
gradient-checkpointing recomputation and the optimiser are not counted, so the share is a floor.

A square 2048^3 matmul is the machine's best case; a 135M model's linear layers are thin (hidden
size 576), and oneDNN reaches less on them. So the run also times the model's own linear shapes
(every distinct [tokens, in] x [in, out] of the model at one micro-batch's token count, forward and
both backward products, weighted by how often the model has each) and prints the learner's share
of that ceiling as well: the part of the gap no scheduling of the same matmuls can close.
`--op-table` runs one more learner step under torch.profiler and prints its operators by self time.

On a CUDA GPU (`--device cuda`, the default where one is visible) the same comparison runs there;
give it a GPU-sized batch, for example
    python benchmarks/bench_learner.py --model config --prompts 32 --group-size 16 \
        --prompt-tokens 90,150 --completion-tokens 100,1024 --micro-batch-tokens 32768 \
        --sides baseline,learner,learner_compiled --baseline-micro-batch 32
and the peak is then measured on 8192^3 matmuls, the size at which a GPU's bf16 rate levels off.
"""
from __future__ import annotations

import argparse
import copy
import functools
import platform
import statistics
import time

import torch

from r1train.batching import collate
from r1train.hardware import bf16_autocast_supported
from r1train.learner import PolicyLearner, TrainBatch
from r1train.policy_loss import LossSettings
from r1train.unpadded_rows import common_prefix_length


# Each side the bench can run, with the label its result line gets.
SIDE_LABELS = {"baseline": "baseline (fp32 HF, full logits)", "learner": "r1train PolicyLearner",
               "learner_unpacked": "r1train, one row per sample", "learner_compiled": "r1train, compiled layers",
               "learner_keeping_mlp": "r1train, MLPs keeping everything",
               "learner_compiled_checkpointing": "r1train, compiled layers, gradient checkpointing",
               "learner_padded_rows": "r1train, padded rows",
               "learner_compiled_checkpointing_padded_rows": "r1train, compiled, checkpointing, padded rows"}


def load_model(name: str):
    """The real default model when available, else a config-built model of the same shape."""
    if name != "config":
        try:
            from r1train.models import load_model_and_tokenizer

            model, tokenizer, _ = load_model_and_tokenizer(name)
            return model, f"{name} (pretrained)"
        except Exception as exc:  # the benchmark still runs without the model package
            print(f"could not load {name} ({type(exc).__name__}: {exc}); using a config-built model")
    from transformers import LlamaConfig, LlamaForCausalLM

    # SmolLM2-135M's architecture.
    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    return LlamaForCausalLM(config), "config-built SmolLM2-135M architecture (random weights)"


def make_batch(prompts: int, group_size: int, prompt_tokens: tuple[int, int], completion_tokens: tuple[int, int],
               vocab: int, seed: int = 0, shared_prefix: int = 0) -> TrainBatch:
    """Prompts of a length drawn from `prompt_tokens` (default 90-150: the R1-Zero template around a
    short question), the first `shared_prefix` tokens the same in all (a system prompt), completions
    from `completion_tokens`, about one in six truncated at its top."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(10, vocab, (shared_prefix,), generator=g).tolist()

    def randint(low, high):
        return int(torch.randint(low, high, (1,), generator=g))

    prompt_ids, completion_ids = [], []
    shortest, longest = completion_tokens
    for _ in range(prompts):
        rest = randint(prompt_tokens[0], prompt_tokens[1] + 1) - shared_prefix
        prompt = prefix + torch.randint(10, vocab, (rest,), generator=g).tolist()
        for _ in range(group_size):
            length = longest if randint(0, 6) == 0 else randint(shortest, longest)
            prompt_ids.append(prompt)
            completion_ids.append(torch.randint(10, vocab, (length,), generator=g).tolist())
    advantages = torch.randn(len(prompt_ids), generator=g)
    advantages = advantages + advantages.sign() * 0.1  # never zero
    return TrainBatch(prompt_ids, completion_ids, advantages)


def measure_matmul_peak(dtype: torch.dtype, device: torch.device, size: int, repeats: int = 8) -> float:
    """The best FLOP/s of a [size, size] @ [size, size] matmul in `dtype` over `repeats` tries."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    torch.mm(a, b)  # warm-up: oneDNN or cuBLAS picks and caches its kernel
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def measure_linear_shapes(model, tokens: int, dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """FLOP/s of the model's own linear layers at `tokens` rows: for every distinct (in, out) shape,
    the forward [tokens, in] x [in, out] and the backward's two products (input gradient
    [tokens, out] x [out, in], weight gradient [out, tokens] x [tokens, in]), each the best of
    `repeats`, summed in proportion to how many layers have the shape."""
    counts: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            shape = (module.in_features, module.out_features)
            counts[shape] = counts.get(shape, 0) + 1
    flops = seconds = 0.0
    for (fan_in, fan_out), count in counts.items():
        x = torch.randn(tokens, fan_in, dtype=dtype, device=device)
        w = torch.randn(fan_in, fan_out, dtype=dtype, device=device)
        grad = torch.randn(tokens, fan_out, dtype=dtype, device=device)
        for run in (lambda: x @ w, lambda: grad @ w.t(), lambda: grad.t() @ x):
            run()  # warm-up: oneDNN picks its kernel for the shape
            best = min(_timed(run) for _ in range(repeats))
            flops += count * 2 * tokens * fan_in * fan_out
            seconds += count * best
    return flops / seconds


def _timed(run) -> float:
    """Seconds `run` takes, GPU work included (CUDA calls return before their kernels finish)."""
    _synchronize()
    start = time.perf_counter()
    run()
    _synchronize()
    return time.perf_counter() - start


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _synchronize() -> None:
    if _cuda_in_use():
        torch.cuda.synchronize()


def print_op_table(run, rows: int = 25) -> None:
    """One more call of `run` under torch.profiler: its operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = _cuda_in_use()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        run()
        _synchronize()
    sort_by = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort_by, row_limit=rows))


def step_flops(model, batch: TrainBatch, side: str) -> float:
    """Matmul FLOPs of one training step of `side` on `batch` (see the module docstring)."""
    config = model.config
    head = config.hidden_size * config.vocab_size
    body = sum(p.numel() for p in model.parameters()) - head  # embedding lookup is no matmul
    # Useful work only: what gradient checkpointing computes again is not counted.
    if side.startswith("learner") and side != "learner_unpacked":
        prompts = {id(p): p for p in batch.prompt_ids}  # a group's completions share one prompt list
        # Unpadded rows run the prompts' common start once (per micro-batch: counted once, a floor).
        shared = 0 if side.endswith("_padded_rows") else common_prefix_length(list(prompts.values()))
        body_tokens = (shared + sum(len(p) - shared for p in prompts.values())
                       + sum(len(c) for c in batch.completion_ids))
        head_tokens = sum(len(c) for c in batch.completion_ids)
    else:
        body_tokens = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))
        head_tokens = body_tokens if side == "baseline" else sum(len(c) for c in batch.completion_ids)
    return 6.0 * (body * body_tokens + head * head_tokens)


def baseline_step(model, optimizer, batch: TrainBatch, sequences_per_micro_batch: int) -> None:
    """Plain fp32 HF: fixed-count micro-batches, full logits, log-softmax everywhere."""
    total_tokens = sum(len(c) for c in batch.completion_ids)
    device = next(model.parameters()).device
    advantages = batch.advantages.to(device)
    for start in range(0, len(batch), sequences_per_micro_batch):
        rows = slice(start, start + sequences_per_micro_batch)
        input_ids, attention_mask, completion_mask = collate(
            batch.prompt_ids[rows], batch.completion_ids[rows], 0, device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [b, L, V] fp32
        logprobs = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        weights = advantages[rows].unsqueeze(1) * completion_mask[:, 1:]
        (-(weights * logprobs).sum() / total_tokens).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model alias/folder, or 'config'")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=_range, default=(90, 150), help="MIN,MAX prompt length")
    parser.add_argument("--completion-tokens", type=_range, default=(20, 256), help="MIN,MAX completion length")
    parser.add_argument("--shared-prefix", type=int, default=0,
                        help="tokens at the start of every prompt that are the same (a system prompt)")
    parser.add_argument("--micro-batch-tokens", type=int, default=4096, help="learner token budget")
    parser.add_argument("--baseline-micro-batch", type=int, default=8, help="baseline sequences per micro-batch")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="learner autocast: auto = only with native bf16 (forcing 'on' shows the emulated cost)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--op-table", action="store_true",
                        help="one more step of each side under torch.profiler: its operators by self time")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where both sides train: auto = the CUDA GPU if one is visible, else the CPU")
    parser.add_argument("--sides", default="baseline,learner",
                        help=f"comma-separated, run alternately: {', '.join(SIDE_LABELS)}")
    args = parser.parse_args()
    sides = args.sides.split(",")
    unknown = set(sides) - set(SIDE_LABELS)
    if unknown:
        parser.error(f"unknown side(s) {sorted(unknown)}; choose from {', '.join(SIDE_LABELS)}")

    if not 0 <= args.shared_prefix < args.prompt_tokens[0]:
        parser.error(f"--shared-prefix {args.shared_prefix}: must be at least 0 and shorter than the shortest "
                     f"prompt ({args.prompt_tokens[0]} tokens)")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch (check nvidia-smi and the torch build)")
    bf16_on = args.bf16 == "on" or (args.bf16 == "auto" and bf16_autocast_supported(device))
    model, description = load_model(args.model)
    model.to(device).train()
    batch = make_batch(args.prompts, args.group_size, args.prompt_tokens, args.completion_tokens,
                       model.config.vocab_size, shared_prefix=args.shared_prefix)
    tokens = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))
    completion_tokens = sum(len(c) for c in batch.completion_ids)

    def learner_for(side: str) -> PolicyLearner:
        learner = PolicyLearner(copy.deepcopy(model), lr=1e-6, micro_batch_tokens=args.micro_batch_tokens,
                                bf16=args.bf16 != "off", share_prompts=side != "learner_unpacked",
                                compile_layers=side.startswith("learner_compiled"),
                                gradient_checkpointing="_checkpointing" in side,
                                recompute_mlp_products=side != "learner_keeping_mlp",
                                unpadded_rows=not side.endswith("_padded_rows"))
        if args.bf16 == "on":
            learner.scorer.use_bf16 = True  # autocast where the hardware has no native bf16 too
        return learner

    settings = LossSettings(max_completion_length=args.completion_tokens[1])
    runs = {}
    for side in sides:
        if side == "baseline":
            baseline_model = copy.deepcopy(model)
            # The fused kernel, as the learner's optimiser and transformers' Trainer (torch >= 2.8) take:
            # the sides then differ in their passes, not in their optimiser step.
            baseline_optimizer = torch.optim.AdamW(baseline_model.parameters(), lr=1e-6, betas=(0.9, 0.99),
                                                   fused=True)
            runs[side] = functools.partial(baseline_step, baseline_model, baseline_optimizer, batch,
                                           args.baseline_micro_batch)
        else:
            learner = learner_for(side)
            runs[side] = functools.partial(learner.train_on_batch, batch, settings)

    print(f"model: {description}")
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    print(f"machine: {where}, torch {torch.__version__}, native bf16: {bf16_autocast_supported(device)}, "
          f"learner bf16 autocast: {bf16_on}")
    print(f"batch: {len(batch)} sequences ({args.prompts} prompts x {args.group_size}), {tokens} tokens "
          f"({completion_tokens} completion), longest {max(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))}")

    timings = {side: [] for side in sides}
    peak_memory = dict.fromkeys(sides, 0)  # bytes the GPU allocator held at most during a side's step
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            elapsed = _timed(run)
            if device.type == "cuda":
                peak_memory[name] = max(peak_memory[name], torch.cuda.max_memory_allocated(device))
            if repeat:
                timings[name].append(elapsed)
            print(f"  {'warm-up' if not repeat else f'run {repeat}'} {name}: {elapsed:.1f} s "
                  f"({tokens / elapsed:.0f} tokens/s)", flush=True)

    compute_dtype = torch.bfloat16 if bf16_on else torch.float32
    size = 8192 if device.type == "cuda" else 2048
    peak = measure_matmul_peak(compute_dtype, device, size)
    print(f"matmul peak ({str(compute_dtype).removeprefix('torch.')}, {size}^3, best of 8): {peak / 1e12:.2f} TFLOP/s")
    shape_rows = min(args.micro_batch_tokens, tokens)  # one micro-batch's token count
    shapes = measure_linear_shapes(model, shape_rows, compute_dtype, device)
    print(f"the model's linear shapes at {shape_rows} rows (forward and backward products): "
          f"{shapes / 1e12:.2f} TFLOP/s = {shapes / peak:.0%} of the peak")
    for side in sides:
        achieved = step_flops(model, batch, side) / statistics.median(timings[side])
        print(f"  {side}: {achieved / 1e12:.2f} TFLOP/s of counted matmuls = {achieved / peak:.0%} of the peak, "
              f"{achieved / shapes:.0%} of what the model's shapes reach")
    if args.op_table:
        for side in sides:
            print(f"\n{side}, one more step under torch.profiler:")
            print_op_table(runs[side])

    rates = {side: tokens / statistics.median(timings[side]) for side in sides}
    for side in sides:
        memory = f", peak GPU memory {peak_memory[side] / 2**30:.2f} GiB" if device.type == "cuda" else ""
        print(f"{SIDE_LABELS[side] + ':':36s}{rates[side]:8.0f} tokens/s{memory}")
    for side in sides:
        if side != "baseline" and "baseline" in rates:
            print(f"speed-up of {side} over baseline: {rates[side] / rates['baseline']:.2f}x (target >= 1.5x)")
    if "learner" in rates and "learner_compiled" in rates:
        print(f"compiled layers: {rates['learner_compiled'] / rates['learner']:.2f}x")
    if "learner" in rates and "learner_unpacked" in rates:
        print(f"shared-prompt packing: {rates['learner'] / rates['learner_unpacked']:.2f}x")
    if "learner" in rates and "learner_keeping_mlp" in rates:
        print(f"MLP products recomputed: {rates['learner'] / rates['learner_keeping_mlp']:.2f}x the speed of keeping them")


def _range(text: str) -> tuple[int, int]:
    low, high = (int(part) for part in text.split(","))
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX with 1 <= MIN <= MAX, got {text!r}")
    return low, high

if __name__ == "__main__":
    main()
