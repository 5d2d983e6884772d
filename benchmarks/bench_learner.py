"""Learner throughput: r1train's PolicyLearner against a plain fp32 HF forward and backward.

Both sides train on the same GRPO-shaped batch (prompts x group size completions with realistic,
uneven lengths, every advantage non-zero so the learner cannot skip samples) and take one AdamW
step with gradient clipping. The baseline is what a straightforward trainer does: micro-batches of
a fixed number of sequences in batch order, padded to their longest row, full fp32 [b, L, V]
logits and a log-softmax over every position. The learner uses its defaults: length-sorted
token-budget micro-batches, logits only at completion positions in checkpointed chunks, and bf16
autocast where the CPU or GPU has native bf16 (see `bf16_autocast_supported`).

    .venv/bin/python benchmarks/bench_learner.py            # real default model when installed
    .venv/bin/python benchmarks/bench_learner.py --model config --repeats 1

Tokens per second counts the real (unpadded) prompt and completion tokens of the batch. Runs
alternate between the two sides and the median is reported, since the machine is shared.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from r1train.batching import collate
from r1train.learner import LossSettings, PolicyLearner, TrainBatch, bf16_autocast_supported


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


def make_batch(prompts: int, group_size: int, max_new_tokens: int, vocab: int, seed: int = 0) -> TrainBatch:
    """Prompts of 90-150 tokens (the R1-Zero template around a short question), completions of
    20 tokens up to the limit, about one in six truncated at the limit."""
    g = torch.Generator().manual_seed(seed)

    def randint(low, high):
        return int(torch.randint(low, high, (1,), generator=g))

    prompt_ids, completion_ids = [], []
    for _ in range(prompts):
        prompt = torch.randint(10, vocab, (randint(90, 151),), generator=g).tolist()
        for _ in range(group_size):
            length = max_new_tokens if randint(0, 6) == 0 else randint(20, max_new_tokens)
            prompt_ids.append(prompt)
            completion_ids.append(torch.randint(10, vocab, (length,), generator=g).tolist())
    advantages = torch.randn(len(prompt_ids), generator=g)
    advantages = advantages + advantages.sign() * 0.1  # never zero
    return TrainBatch(prompt_ids, completion_ids, advantages)


def baseline_step(model, optimizer, batch: TrainBatch, sequences_per_micro_batch: int) -> None:
    """Plain fp32 HF: fixed-count micro-batches, full logits, log-softmax everywhere."""
    total_tokens = sum(len(c) for c in batch.completion_ids)
    for start in range(0, len(batch), sequences_per_micro_batch):
        rows = slice(start, start + sequences_per_micro_batch)
        input_ids, attention_mask, completion_mask = collate(
            batch.prompt_ids[rows], batch.completion_ids[rows], 0, torch.device("cpu"))
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [b, L, V] fp32
        logprobs = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        weights = batch.advantages[rows].unsqueeze(1) * completion_mask[:, 1:]
        (-(weights * logprobs).sum() / total_tokens).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model alias/folder, or 'config'")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--micro-batch-tokens", type=int, default=4096, help="learner token budget")
    parser.add_argument("--baseline-micro-batch", type=int, default=8, help="baseline sequences per micro-batch")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="learner autocast: auto = only with native bf16 (forcing 'on' shows the emulated cost)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model, description = load_model(args.model)
    model.train()
    batch = make_batch(args.prompts, args.group_size, args.max_new_tokens, model.config.vocab_size)
    tokens = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))
    completion_tokens = sum(len(c) for c in batch.completion_ids)

    baseline_model = copy.deepcopy(model)
    baseline_optimizer = torch.optim.AdamW(baseline_model.parameters(), lr=1e-6, betas=(0.9, 0.99))
    learner = PolicyLearner(model, lr=1e-6, micro_batch_tokens=args.micro_batch_tokens, bf16=args.bf16 != "off")
    if args.bf16 == "on":
        learner.use_bf16 = True
    settings = LossSettings(max_completion_length=args.max_new_tokens)

    print(f"model: {description}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, native bf16: {bf16_autocast_supported(torch.device('cpu'))}, "
          f"learner bf16 autocast: {learner.use_bf16}")
    print(f"batch: {len(batch)} sequences ({args.prompts} prompts x {args.group_size}), {tokens} tokens "
          f"({completion_tokens} completion), longest {max(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))}")

    timings = {"baseline": [], "learner": []}
    runs = {
        "baseline": lambda: baseline_step(baseline_model, baseline_optimizer, batch, args.baseline_micro_batch),
        "learner": lambda: learner.train_on_batch(batch, settings),
    }
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            if repeat:
                timings[name].append(elapsed)
            print(f"  {'warm-up' if not repeat else f'run {repeat}'} {name}: {elapsed:.1f} s "
                  f"({tokens / elapsed:.0f} tokens/s)", flush=True)

    baseline_tps = tokens / statistics.median(timings["baseline"])
    learner_tps = tokens / statistics.median(timings["learner"])
    print(f"baseline (fp32 HF, full logits):   {baseline_tps:8.0f} tokens/s")
    print(f"r1train PolicyLearner:             {learner_tps:8.0f} tokens/s")
    print(f"speed-up: {learner_tps / baseline_tps:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
