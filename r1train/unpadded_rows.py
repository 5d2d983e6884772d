"""Unpadded learner passes: every token of a micro-batch once, the prompts' common start once.

Packed rows (`r1train/packing.py`) run a group's prompt once for all of its completions, but a
batch of rows is still a rectangle: each row padded to the longest one (rounded up to 32 tokens),
and the start that all prompts share (system prompt and chat template: 62 of the R1-Zero toy
prompt's 78 tokens) run once per row. The projections and MLPs, most of a decoder's work, then
run on padding and on repeats: about a third of the tokens of the toy recipe's learner passes.

Here the decoder takes the micro-batch as one sequence [1, T] holding every token once: the common
prefix of all its prompts, then each pack's rest of the prompt and its completions, each token at
its position in its own sample. Only attention needs rows. The attention function registered here
gathers each row's queries, and as its keys the shared prefix's and its own, into padded
[R, heads, L, D] tensors, runs transformers' sdpa on them with the row's mask (a completion sees
the prefix, its prompt's rest and its own earlier tokens, as in a packed row), and gathers the
outputs back to their tokens. The gathers move a few vectors per token; the padding and the
repeats now cost attention only. The first row is the prefix itself, attending causally to itself;
every other row attends to all of it, so its gradient collects every row's share.

Every scored token sees the context it had in a row of its own, so logprobs and gradients are
those of plain rows up to floating-point summation order (tests/test_unpadded_rows.py, float64).

`use_unpadded_rows` points a model whose attention is "sdpa" at this implementation, which falls
back to plain sdpa for any call without a row layout (generation, evaluation, another stage's
passes). The name is registered with transformers, attention and mask functions both, and
`_attn_implementation` is not saved with a model's config: checkpoints load anywhere.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from r1train.packing import UNPADDED_ATTENTION as NAME
from r1train.packing import ScoringBatch, packed_mask, padded_row_length

# The row layout's tensors, passed to the decoder as keyword arguments, which transformers hands
# through every layer to the attention function.
LAYOUT_KEYS = ("row_queries", "row_keys", "token_slots")


def unpadded_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, row_queries=None,
                       row_keys=None, token_slots=None, **kwargs):
    """transformers' attention signature. With a row layout: query [1, H, T, D], key and value
    [1, KV, T, D] for the T tokens; `row_queries` [R, Lq] and `row_keys` [R, Lk] say which tokens
    are each row's queries and keys, `attention_mask` [R, 1, Lq, Lk] (bool) which pairs may attend,
    `token_slots` [T] where each token's output sits in the rows (row * Lq + column). Returns
    ([1, T, H, D], None). Without one: sdpa."""
    if row_queries is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    dtype = _compute_dtype(query)
    # [H, T, D] views of [T, H, D] memory: gathering whole tokens along T copies contiguous rows.
    queries = query[0].transpose(0, 1).to(dtype)[row_queries].transpose(1, 2)  # [R, H, Lq, D]
    keys = key[0].transpose(0, 1).to(dtype)[row_keys].transpose(1, 2)  # [R, KV, Lk, D]
    values = value[0].transpose(0, 1).to(dtype)[row_keys].transpose(1, 2)
    output, _ = sdpa_attention_forward(module, queries, keys, values, attention_mask, scaling=scaling,
                                       dropout=dropout)  # [R, Lq, H, D]
    return output.flatten(0, 1)[token_slots].unsqueeze(0), None


def _compute_dtype(query: torch.Tensor) -> torch.dtype:
    """The dtype sdpa computes in: autocast's where it is on (the rotary embedding hands over a
    float32 query under autocast), else the query's. Casting before the gathers halves what they
    move under bf16."""
    device = query.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype


AttentionInterface.register(NAME, unpadded_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # calls without a layout get sdpa's masks


def use_unpadded_rows(model: torch.nn.Module) -> bool:
    """Switch a model whose attention is transformers' "sdpa" to this implementation; True if it
    uses it now."""
    config = model.config
    if getattr(config, "_attn_implementation", None) == "sdpa":
        config._attn_implementation = NAME
    return unpadded(model)


def unpadded(model: torch.nn.Module) -> bool:
    """Whether `model`'s learner passes take the unpadded layout."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) == NAME


def common_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens at the start of every prompt in `prompts`."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    for length in range(shortest):
        token = first[length]
        if any(p[length] != token for p in prompts):
            return length
    return shortest


def pack_unpadded(prompt_ids: list[list[int]], completion_ids: list[list[int]], packs: list[list[int]],
                  pad_token_id: int, device: torch.device, width_multiple: int = 1) -> ScoringBatch:
    """The samples of `packs` (lists of indices sharing a prompt, see `plan_packs`) as one unpadded
    sequence with its row layout; sample n of the result is the n-th index of `packs`, flattened.

    With several packs, their prompts' common prefix is held once, as the first row; each pack is
    a row of its prompt's rest and its completions. Rows are padded (for attention only) to the
    longest rounded up to a multiple of `width_multiple`, and the sequence ends in padding up to
    a multiple of it: oneDNN keeps a kernel per matmul shape in a bounded cache
    (r1train/cpu_caches.py), and a token count that takes a new value every pass would never hit it.
    """
    prefix_length = common_prefix_length([prompt_ids[m[0]] for m in packs]) if len(packs) > 1 else 0
    first_prompt = prompt_ids[packs[0][0]]
    tokens: list[int] = list(first_prompt[:prefix_length])
    positions: list[int] = list(range(prefix_length))
    rows: list[tuple[list[int], list[int], bool]] = []  # (flat indices, segments, sees the prefix)
    if prefix_length:
        rows.append((list(range(prefix_length)), [0] * prefix_length, False))
    source, target, sample, column = [], [], [], []
    sample_number = 0
    for members in packs:
        prompt = prompt_ids[members[0]]
        start = len(tokens)
        rest = prompt[prefix_length:]
        tokens.extend(rest)
        positions.extend(range(prefix_length, len(prompt)))
        indices, segments = list(range(start, len(tokens))), [0] * len(rest)
        # The token predicting a completion's first one: its prompt's last, in the rest or the prefix.
        prompt_end = len(tokens) - 1 if rest else prefix_length - 1
        for number, index in enumerate(members, start=1):
            if prompt_ids[index] != prompt:
                raise ValueError(f"sample {index} does not share its pack's prompt")
            completion = completion_ids[index]
            first = len(tokens)
            tokens.extend(completion)
            positions.extend(range(len(prompt), len(prompt) + len(completion)))
            indices.extend(range(first, len(tokens)))
            segments.extend([number] * len(completion))
            source.extend([prompt_end] + list(range(first, len(tokens) - 1)) if completion else [])
            target.extend(completion)
            sample.extend([sample_number] * len(completion))
            column.extend(range(len(completion)))
            sample_number += 1
        rows.append((indices, segments, True))
    padding = padded_row_length(len(tokens), width_multiple) - len(tokens)
    if padding:  # a row of its own, each padding token attending to itself only
        rows.append((list(range(len(tokens), len(tokens) + padding)), [-1] * padding, False))
        tokens.extend([pad_token_id] * padding)
        positions.extend([0] * padding)
    mask, layout = _row_layout(rows, prefix_length, width_multiple)

    def long(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    longest = max((len(completion_ids[i]) for members in packs for i in members), default=0)
    return ScoringBatch(long([tokens]), mask.to(device), long([positions]), long(source), long(target),
                        long(sample), long(column), sample_number, longest,
                        layout={name: tensor.to(device) for name, tensor in zip(LAYOUT_KEYS, layout)})


def _row_layout(rows: list[tuple[list[int], list[int], bool]], prefix_length: int, width_multiple: int
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The attention rows of an unpadded sequence: mask [R, 1, Lq, Lk] and (row_queries [R, Lq],
    row_keys [R, Lk], token_slots [T]). Row r's keys are the prefix's P tokens, then its own
    queries; `rows` gives each row's tokens (flat indices, in order), their segments (0 prompt,
    j completion j) and whether the row sees the prefix."""
    width = padded_row_length(max(len(indices) for indices, _, _ in rows), width_multiple)
    count = len(rows)
    queries = torch.zeros(count, width, dtype=torch.long)  # padding points at token 0, masked out
    segment = torch.full((count, width), -1, dtype=torch.long)  # -1: padding
    sees_prefix = torch.zeros(count, dtype=torch.bool)
    total = sum(len(indices) for indices, _, _ in rows)
    slots = torch.empty(total, dtype=torch.long)
    for row, (indices, segments, prefix) in enumerate(rows):
        flat = torch.tensor(indices, dtype=torch.long)
        queries[row, :len(indices)] = flat
        segment[row, :len(indices)] = torch.tensor(segments, dtype=torch.long)
        sees_prefix[row] = prefix
        slots[flat] = row * width + torch.arange(len(indices))
    keys = torch.cat([torch.arange(prefix_length).expand(count, prefix_length), queries], dim=1)
    own = packed_mask(segment, "sdpa")  # [R, 1, Lq, Lq]: a packed row's own mask, padding seeing itself
    prefix = (sees_prefix.view(count, 1, 1, 1) & (segment >= 0).view(count, 1, width, 1)).expand(
        count, 1, width, prefix_length)
    return torch.cat([prefix, own], dim=3), (queries, keys, slots)
