"""The input embedding's gradient added in place, for a weight tied to the output layer.

A tied weight gets two gradients in one backward pass: the output layer's, computed first, and the
input embedding's, computed last. Autograd keeps the first in a buffer until the second arrives
and then adds them, so at the very end of the backward pass, when every other gradient already
exists, two full [V, H] fp32 tensors live at once (2 x 108 MiB for the default model). On the
bench_vs_trl workload that moment was the learn phase's peak
(benchmarks/results/tied_embedding_amx_2026-12-05/).

Here the lookup reads the weight detached, so the weight's only edge in the graph is the output
layer's: its gradient lands in `.grad` as soon as it is computed (no copy). The lookup's backward
then adds each looked-up row's gradient into `.grad` in place (`index_add_`), holding nothing
larger than the [tokens, H] gradient it was given. The sum is the same; only the order of the
floating-point additions differs.

The gradient reaches `.grad` only: a loss taken with `torch.autograd.grad` would get the output
layer's part alone, and data-parallel wrappers, which reduce a gradient from a hook on its
accumulation, would miss the added rows. So the caller asks for this path where neither applies:
the learner, whose losses go through `.backward()`, when it runs as a single process. The layout
must be a plain `nn.Embedding` (no max_norm, no per-frequency scaling, dense).
"""
from __future__ import annotations

import torch


def lookup_embeddings(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor | None:
    """The input embeddings of `input_ids` with the tied weight's gradient added in place, or None
    where that does not apply (the caller then lets the model look them up itself)."""
    embedding = model.get_input_embeddings()
    if not (torch.is_grad_enabled() and _plain_tied_embedding(model, embedding)):
        return None
    anchor = torch.empty(0, requires_grad=True)  # makes the lookup's output part of the graph
    return _LookupAddingGradientInPlace.apply(input_ids, anchor, embedding)


def _plain_tied_embedding(model: torch.nn.Module, embedding) -> bool:
    head = model.get_output_embeddings()
    return (type(embedding) is torch.nn.Embedding and head is not None and head.weight is embedding.weight
            and embedding.weight.requires_grad and type(embedding.weight.data) is torch.Tensor
            and embedding.max_norm is None and not embedding.scale_grad_by_freq and not embedding.sparse)


class _LookupAddingGradientInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input_ids, anchor, embedding):
        # The module, not its weight, is the argument: a weight among the inputs would be an edge
        # of the graph, and autograd would hold the output layer's gradient back until this runs.
        ctx.embedding = embedding
        ctx.save_for_backward(input_ids)
        return torch.nn.functional.embedding(input_ids, embedding.weight.detach(), embedding.padding_idx)

    @staticmethod
    def backward(ctx, grad_output):
        (input_ids,) = ctx.saved_tensors
        weight = ctx.embedding.weight
        rows = input_ids.reshape(-1)
        grads = grad_output.reshape(rows.numel(), -1).to(weight.dtype)
        padding_idx = ctx.embedding.padding_idx
        if padding_idx is not None:  # as nn.Embedding: the padding row gets no gradient
            keep = rows != padding_idx
            rows, grads = rows[keep], grads[keep]
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        weight.grad.index_add_(0, rows, grads)
        return None, None, None
