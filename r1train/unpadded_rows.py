"""Unpadded learner passes: every token of a micro-batch once, the prompts' common start once.

Packed rows (`r1train/packing.py`) run a group's prompt once for all of its completions, but a
batch of rows is still a rectangle: each row padded to the longest one (rounded up to 32 tokens),
and the start that all prompts share (system prompt and chat template: 62 of the R1-Zero toy
prompt's 78 tokens) run once per row. The projections and MLPs, most of a decoder's work, then
run on padding and on repeats: about a third of the tokens of the toy recipe's learner passes.

Here the decoder takes the micro-batch as one sequence [1, T] holding every token once: the common
prefix of all its prompts, then each pack's rest of the prompt and its completions, each token at
its position in its own sample. Only attention needs rows. The attention function registered here
gathers each row's queries, and as its keys the shared prefix's and the row's own, into padded
[R, heads, L, D] tensors, runs attention on them with the rows' mask (a completion sees the
prefix, its prompt's rest and its own earlier tokens, as in a packed row), and gathers the outputs
back to their tokens. On a CPU that attention is two batched matmuls and a softmax
(`attention_in_matmuls`): at the short rows described below, torch's flash kernel spends most of
its time on per-row overhead; elsewhere it is transformers' sdpa. The gathers move a few vectors
per token; the padding and the repeats now cost attention only.

Rows are not packs. A pack's completions in one row see each other's positions masked out, pairs
the kernel computes all the same: a pack of 8 completions of 59 tokens spends about 7/8 of its pairs
there. So rows have a width of their own, the same for all: the prefix, each pack's rest and its
completions (a longer one in chunks) are placed first-fit in rows of at most that many queries,
each row keyed by the prefix, its pack's rest and its completions up to their chunks' ends, and
the width is the one whose rows cost least by a fitted estimate of the CPU kernel's time (a cost
per row, per query slot and per query-key pair; `attention_rows`).

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
from r1train.packing import ScoringBatch, padded_row_length

# The row layout's tensors, passed to the decoder as keyword arguments, which transformers hands
# through every layer to the attention function.
LAYOUT_KEYS = ("row_queries", "row_keys", "token_slots", "score_bias")


def unpadded_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, row_queries=None,
                       row_keys=None, token_slots=None, score_bias=None, **kwargs):
    """transformers' attention signature. With a row layout: query [1, H, T, D], key and value
    [1, KV, T, D] for the T tokens; `row_queries` [R, Lq] and `row_keys` [R, Lk] say which tokens
    are each row's queries and keys, `attention_mask` [R, 1, Lq, Lk] (bool) which pairs may attend
    and `score_bias` the same as 0 or -inf, `token_slots` [T] where each token's output sits in the
    rows (row * Lq + column). Returns ([1, T, H, D], None). Without one: sdpa."""
    if row_queries is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    dtype = _compute_dtype(query)
    # [H, T, D] views of [T, H, D] memory: gathering whole tokens along T copies contiguous rows.
    # A token is one row's query (its slot in `token_slots`), but the key of several rows.
    queries = gather_tokens(query[0].transpose(0, 1), row_queries, dtype, token_slots).transpose(1, 2)  # [R, H, Lq, D]
    keys = gather_tokens(key[0].transpose(0, 1), row_keys, dtype).transpose(1, 2)  # [R, KV, Lk, D]
    values = gather_tokens(value[0].transpose(0, 1), row_keys, dtype).transpose(1, 2)
    if query.device.type == "cpu":
        output = attention_in_matmuls(queries, keys, values, score_bias, scaling, dropout)
    else:
        output, _ = sdpa_attention_forward(module, queries, keys, values, attention_mask, scaling=scaling,
                                           dropout=dropout)  # [R, Lq, H, D]
    return gather_tokens(output.flatten(0, 1), token_slots, output.dtype).unsqueeze(0), None


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor, dtype: torch.dtype,
                  inverse: torch.Tensor | None = None) -> torch.Tensor:
    """`tokens` [N, ...] cast to `dtype` and gathered at `index` (any shape of indices below N).

    Its backward sums the gradient of every slot back onto its token in float32 (float64 stays
    float64) with aten's index_add, and returns it in `tokens`' dtype. Left to autograd and
    inductor, that sum is an index_put whose CPU kernel adds with atomic compare-and-swap loops in
    the compute dtype: the keys of the rows, which repeat the shared prefix in every row, were
    summed in bfloat16, and one layer's attention at the main recipe's rows took 71 ms forward and
    backward on the 2-core Zen 4 machine against 44 ms this way.
    `inverse` [N], where given, is the one slot of each token whose gradient can be other than
    zero (queries: the other slots are row padding, whose outputs nothing reads); the backward
    then gathers from those slots."""
    return _GatherTokens.apply(tokens, index, dtype, inverse)


class _GatherTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens, index, dtype, inverse):
        ctx.save_for_backward(index if inverse is None else inverse)
        ctx.count, ctx.dtype, ctx.index_dims = tokens.shape[0], tokens.dtype, index.dim()
        ctx.by_gather = inverse is not None
        return tokens.to(dtype)[index]

    @staticmethod
    def backward(ctx, gradient):
        index, = ctx.saved_tensors
        slots = gradient.flatten(0, ctx.index_dims - 1)
        if ctx.by_gather:
            return slots[index].to(ctx.dtype), None, None, None
        return torch.ops.r1train.sum_at_tokens(slots, index.flatten(), ctx.count, ctx.dtype), None, None, None


# Slot rows cast to float32 at a time for their sum: the cast of all of them (a key-value layer's
# slots at the main recipe's rows: 14,000 rows of 192) would add its size to the learner's peak.
SLOTS_PER_SUM = 2048


@torch.library.custom_op("r1train::sum_at_tokens", mutates_args=())
def sum_at_tokens(slots: torch.Tensor, index: torch.Tensor, count: int, dtype: torch.dtype) -> torch.Tensor:
    """[count, ...] in `dtype`: row n the float32 (at least) sum of the `slots` rows whose `index` is n.
    An operator of its own, so that compiled graphs call aten's index_add rather than lower it."""
    wide = torch.promote_types(slots.dtype, torch.float32)
    summed = slots.new_zeros((count, *slots.shape[1:]), dtype=wide)
    for start in range(0, index.shape[0], SLOTS_PER_SUM):
        end = start + SLOTS_PER_SUM
        summed.index_add_(0, index[start:end], slots[start:end].to(wide))
    return summed.to(dtype)


@sum_at_tokens.register_fake
def _sum_at_tokens_shape(slots, index, count, dtype):
    return slots.new_empty((count, *slots.shape[1:]), dtype=dtype)


def attention_in_matmuls(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                         scaling: float | None = None, dropout: float = 0.0) -> torch.Tensor:
    """Masked attention of rows as two batched matmuls and a softmax: queries [R, H, Lq, D], keys
    and values [R, KV, Lk, D] (H a multiple of KV), `mask` [R, 1, Lq, Lk] bool (True: may attend)
    or an additive float bias, 0 where a pair may attend and -inf where not; every query sees at
    least one key. Returns [R, Lq, H, D], as transformers' sdpa does. Inductor's CPU kernels add a
    bias at about twice the speed they apply a bool mask (its lanes converted and blended).

    On a CPU this takes 0.33-0.80x the time of torch's flash-attention kernel, forward and backward,
    at the rows the learner builds (tens of rows of 16-128 queries and 67-170 keys, 9 heads of 64;
    two runs of benchmarks/bench_attention_rows.py on the 2-core Zen 4 machine): the kernel's time
    per row and per query slot is mostly overhead there, and rows this short gain nothing from its
    tiling. Scores and softmax are float32 at least, as in the kernel; only the probabilities are
    rounded to the values' dtype for the second matmul.
    Each key-value head's query heads go in one matmul, so grouped keys are never repeated.
    Autocast is off inside: it would run the score matmul in bfloat16."""
    with torch.autocast(queries.device.type, enabled=False):
        return _attention_in_matmuls(queries, keys, values, mask, scaling, dropout)


def _attention_in_matmuls(queries, keys, values, mask, scaling, dropout):
    rows, heads, width, dim = queries.shape
    key_heads, length = keys.shape[1], keys.shape[2]
    groups = heads // key_heads
    grouped = queries.reshape(rows, key_heads, groups * width, dim)
    wide = torch.promote_types(queries.dtype, torch.float32)  # float64 stays float64
    scores = torch.matmul(grouped.to(wide), keys.to(wide).transpose(-1, -2))  # [R, KV, G * Lq, Lk]
    scores = scores.view(rows, key_heads, groups, width, length) * (dim ** -0.5 if scaling is None else scaling)
    if mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
    else:
        scores = scores + mask.unsqueeze(1)
    probabilities = scores.softmax(dim=-1).to(values.dtype)
    if dropout:
        probabilities = torch.nn.functional.dropout(probabilities, dropout)
    output = torch.matmul(probabilities.view(rows, key_heads, groups * width, length), values)
    return output.view(rows, heads, width, dim).transpose(1, 2)


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
                  pad_token_id: int, device: torch.device, width_multiple: int = 1,
                  row_width: int | None = None) -> ScoringBatch:
    """The samples of `packs` (lists of indices sharing a prompt, see `plan_packs`) as one unpadded
    sequence with its attention rows; sample n of the result is the n-th index of `packs`, flattened.

    With several packs, their prompts' common prefix is held once, at the start; then each pack's
    rest of the prompt and its completions. The sequence ends in padding up to a multiple of
    `width_multiple`: oneDNN keeps a kernel per matmul shape in a bounded cache
    (r1train/cpu_caches.py), and a token count that takes a new value every pass would never hit it.
    Attention rows are `row_width` queries wide (a multiple of `width_multiple`), by default the
    width `attention_rows` finds cheapest.
    """
    prefix_length = common_prefix_length([prompt_ids[m[0]] for m in packs]) if len(packs) > 1 else 0
    first_prompt = prompt_ids[packs[0][0]]
    tokens: list[int] = list(first_prompt[:prefix_length])
    positions: list[int] = list(range(prefix_length))
    pieces: list[tuple[list[int], list[list[int]]]] = []  # each pack's (rest of the prompt, completions) as indices
    source, target, sample, column = [], [], [], []
    sample_number = 0
    for members in packs:
        prompt = prompt_ids[members[0]]
        start = len(tokens)
        rest = prompt[prefix_length:]
        tokens.extend(rest)
        positions.extend(range(prefix_length, len(prompt)))
        completions = []
        # The token predicting a completion's first one: its prompt's last, in the rest or the prefix.
        prompt_end = len(tokens) - 1 if rest else prefix_length - 1
        for index in members:
            if prompt_ids[index] != prompt:
                raise ValueError(f"sample {index} does not share its pack's prompt")
            completion = completion_ids[index]
            first = len(tokens)
            tokens.extend(completion)
            positions.extend(range(len(prompt), len(prompt) + len(completion)))
            completions.append(list(range(first, len(tokens))))
            source.extend([prompt_end] + list(range(first, len(tokens) - 1)) if completion else [])
            target.extend(completion)
            sample.extend([sample_number] * len(completion))
            column.extend(range(len(completion)))
            sample_number += 1
        pieces.append((list(range(start, start + len(rest))), completions))
    real_tokens = len(tokens)
    padding = list(range(real_tokens, padded_row_length(real_tokens, width_multiple)))
    tokens.extend([pad_token_id] * len(padding))
    positions.extend([0] * len(padding))
    if row_width is None:
        rows, width = attention_rows(prefix_length, pieces, padding, width_multiple)
    else:
        rows, width = _rows(prefix_length, pieces, padding, row_width), row_width
    mask, layout = _row_layout(rows, prefix_length, width, len(tokens))

    def long(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    longest = max((len(completion_ids[i]) for members in packs for i in members), default=0)
    return ScoringBatch(long([tokens]), mask.to(device), long([positions]), long(source), long(target),
                        long(sample), long(column), sample_number, longest,
                        layout={name: tensor.to(device) for name, tensor in zip(LAYOUT_KEYS, layout)})


# An attention row: its queries and, besides the shared prefix that every row sees, its keys, as
# token indices with their segments (0: prefix, a prompt's rest, padding; j: the pack's completion j).
Row = tuple[list[int], list[int], list[int], list[int]]

# What an attention row costs, in units of one query-key pair: a fixed cost per row and one per
# query slot. Chosen by the learner's attention time at the equal-work recipe's shape on the 2-core
# Zen 4 machine (bench_learner.py --op-table: matmuls and fused graphs), `attention_in_matmuls` in
# compiled layers, among (row, query slot) = (700, 20), (1500, 40), (4240, 139), (10000, 300): this
# was lowest, the others within 6%. Fits to the function alone (benchmarks/bench_attention_rows.py)
# say 470-1,020 and about 0; torch's flash kernel, which rows took before, about 4,240 and 139.
ROW_COST_PAIRS = 1500
QUERY_COST_PAIRS = 40
# Widths tried, in multiples of the sequence's width multiple.
_WIDTH_STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def attention_rows(prefix_length: int, pieces: list[tuple[list[int], list[list[int]]]], padding: list[int],
                   width_multiple: int) -> tuple[list[Row], int]:
    """The rows and their width (queries per row, a multiple of `width_multiple`) of least
    estimated cost among the widths tried, the width of the widest pack among them."""
    widest = max([prefix_length, len(padding)] + [len(rest) + sum(map(len, completions))
                                                   for rest, completions in pieces])
    widest = padded_row_length(max(widest, 1), width_multiple)
    widths = sorted({step * width_multiple for step in _WIDTH_STEPS if step * width_multiple < widest} | {widest})
    best = None
    for width in widths:
        rows = _rows(prefix_length, pieces, padding, width)
        keys = prefix_length + max(len(row[2]) for row in rows)
        cost = len(rows) * (ROW_COST_PAIRS + width * (QUERY_COST_PAIRS + keys))
        if best is None or cost < best[0]:
            best = (cost, rows, width)
    return best[1], best[2]


def _rows(prefix_length: int, pieces: list[tuple[list[int], list[list[int]]]], padding: list[int],
          width: int) -> list[Row]:
    """Rows of at most `width` queries: the prefix and the padding in chunks; each pack's rest of
    the prompt and its completions (a longer one in chunks) placed first-fit in rows of their own
    pack, each row keyed by the pack's rest and its completions up to their chunks' ends."""
    rows: list[Row] = []
    for start in range(0, prefix_length, width):  # keys: the prefix every row sees
        chunk = list(range(start, min(start + width, prefix_length)))
        rows.append((chunk, [0] * len(chunk), [], []))
    for rest, completions in pieces:
        # (queries, segment, keys besides the rest): the rest in chunks, then each completion's.
        parts = [(rest[start:start + width], 0, []) for start in range(0, len(rest), width)]
        for number, completion in enumerate(completions, start=1):
            for start in range(0, len(completion), width):
                end = min(start + width, len(completion))
                parts.append((completion[start:end], number, completion[:end]))
        pack_rows: list[Row] = []
        for queries, segment, keys in parts:
            row = next((r for r in pack_rows if len(r[0]) + len(queries) <= width), None)
            if row is None:
                row = ([], [], list(rest), [0] * len(rest))
                pack_rows.append(row)
            row[0].extend(queries)
            row[1].extend([segment] * len(queries))
            if segment:
                row[2].extend(keys)
                row[3].extend([segment] * len(keys))
        rows.extend(pack_rows)
    for start in range(0, len(padding), width):
        chunk = padding[start:start + width]
        rows.append((chunk, [0] * len(chunk), chunk, [0] * len(chunk)))
    return rows


def _row_layout(rows: list[Row], prefix_length: int, width: int, tokens: int
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Tensors of `rows`: mask [R, 1, width, P + K] and (row_queries [R, width], row_keys
    [R, P + K], token_slots [T], score_bias: the mask as float32 0 or -inf). Row r's keys are the
    prefix's P tokens, then its own K (padded).
    A query sees a key of its row that is no later in the sequence and is either shared context
    (segment 0) or its own completion's; a padding slot sees every real key of its row (no empty
    softmax; its output is never read)."""
    count, own = len(rows), max(len(row[2]) for row in rows)
    queries = torch.zeros(count, width, dtype=torch.long)  # padding slots point at token 0
    query_order = torch.full((count, width), tokens, dtype=torch.long)
    query_segment = torch.zeros(count, width, dtype=torch.long)
    keys = torch.zeros(count, own, dtype=torch.long)
    key_order = torch.full((count, own), tokens, dtype=torch.long)  # later than every query: unseen
    key_segment = torch.zeros(count, own, dtype=torch.long)
    slots = torch.empty(tokens, dtype=torch.long)
    for number, (row_queries, row_segments, row_keys, row_key_segments) in enumerate(rows):
        flat = torch.tensor(row_queries, dtype=torch.long)
        queries[number, :len(flat)] = query_order[number, :len(flat)] = flat
        query_segment[number, :len(flat)] = torch.tensor(row_segments, dtype=torch.long)
        keys[number, :len(row_keys)] = key_order[number, :len(row_keys)] = torch.tensor(row_keys, dtype=torch.long)
        key_segment[number, :len(row_keys)] = torch.tensor(row_key_segments, dtype=torch.long)
        slots[flat] = number * width + torch.arange(len(flat))
    prefix = torch.arange(prefix_length).expand(count, prefix_length)
    keys, key_order = torch.cat([prefix, keys], dim=1), torch.cat([prefix, key_order], dim=1)
    key_segment = torch.cat([torch.zeros(count, prefix_length, dtype=torch.long), key_segment], dim=1)
    earlier = key_order.unsqueeze(1) <= query_order.unsqueeze(2)  # [R, width, P + K]
    related = (key_segment.unsqueeze(1) == 0) | (key_segment.unsqueeze(1) == query_segment.unsqueeze(2))
    real_key = (key_order < tokens).unsqueeze(1)
    padding_slot = (query_order == tokens).unsqueeze(2)
    allowed = (real_key & (padding_slot | (earlier & related))).unsqueeze(1)
    bias = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
    return allowed, (queries, keys, slots, bias)
