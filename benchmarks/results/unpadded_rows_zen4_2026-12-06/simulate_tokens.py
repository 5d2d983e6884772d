"""Tokens the learner's decoder runs at the main recipe's shape, padded rows against unpadded
sequences, with the learner's packing plan and the padded learner's micro-batches for both (50
simulated steps: 16 prompts of 77-79 tokens sharing their first 62, 8 completions each of about 22
tokens, about one group in six without signal).
Run from a checkout with r1train importable: python simulate_tokens.py"""
import random

from r1train.batching import plan_micro_batches
from r1train.packing import pack_length, padded_row_length, plan_packs

SHARED, BUDGET, HIDDEN = 62, 4096, 576
random.seed(0)
padded = unpadded_rows = unpadded = padded_pairs = unpadded_pairs = 0
for step in range(50):
    prompts, completions = [], []
    for group in range(16):
        if random.random() < 0.16:  # no signal: the learner skips the group
            continue
        question = [1] * SHARED + [group + 2] * random.choice([15, 16, 17])
        for _ in range(8):
            prompts.append(question)
            completions.append([5] * max(8, int(random.gauss(21.7, 6))))
    packs = plan_packs(prompts, completions, BUDGET, HIDDEN)
    lengths = [padded_row_length(pack_length(m, prompts, completions), 32) for m in packs]
    for group in plan_micro_batches(lengths, BUDGET):
        members = [packs[j] for j in group]
        width = max(lengths[j] for j in group)
        padded += len(members) * width
        padded_pairs += len(members) * width * width
        unpadded_rows += sum(pack_length(m, prompts, completions) for m in members)
        unpadded += SHARED + sum(pack_length(m, prompts, completions) - SHARED for m in members)
        rest = padded_row_length(max(pack_length(m, prompts, completions) - SHARED for m in members), 32)
        unpadded_pairs += (len(members) + 1) * rest * (rest + SHARED)
print(f"tokens: padded rows {padded:,}, rows without padding {unpadded_rows:,}, unpadded with the shared "
      f"start once {unpadded:,} ({unpadded / padded:.2f}x)")
print(f"attention query-key pairs: unpadded {unpadded_pairs / padded_pairs:.2f}x the padded rows'")
