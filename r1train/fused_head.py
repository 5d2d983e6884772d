"""Token logprobs and entropies through the output layer, with a hand-written backward pass.

For a chunk of C hidden states the output layer makes [C, V] logits (V = 49k for the default
model), and everything after it is elementwise work over C x V floats. Autograd, with the chunk
checkpointed, runs the whole chunk forward twice (once more when the backward pass recomputes it),
then the backward of every op in it: the log-normaliser, the temperature division, a zero-filled
[C, V] gradient for the gather and, with entropies, the softmax and product. On a CPU those
passes over memory cost about as much as the output layer's matmul.

The gradients have a closed form, so this function computes them directly from one recomputation
of the logits. With z the tempered logits, p = softmax(z), lp = z[y] - logsumexp(z) and
H = logsumexp(z) - sum(p * z):

    d lp / d z = onehot(y) - p
    d H / d z  = -p * (z - sum(p * z))

Only the hidden states, the targets and two numbers per row are kept between the passes. The
logits are computed in the precision autocast would use, and the normaliser always in fp32; the
backward pass uses the same precision for its matmuls, as autocast's own backward would.

With `compiled`, the elementwise work of a chunk is two torch.compile'd functions: the forward's
reductions read the matmul's output where it lies (bf16 under autocast), and the backward writes
the logits' gradient straight in the matmul's precision, where aten's operators make an fp32 copy
of the logits and pass over it five or six times. No fp32 [C, V] buffer is then held at all, so a
forward pass with entropies needs no fewer rows per chunk.
"""
from __future__ import annotations

import torch


def head_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float,
                  with_entropy: bool, chunk_size: int = 1024, compiled: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprobs [K] of `targets` [K] under softmax(hidden @ weight.T / temperature) for hidden
    states [K, H], and entropies [K] (None without `with_entropy`); float32, or float64 for float64
    inputs. At most `chunk_size` rows of logits exist at once, in buffers reused chunk after chunk
    (a fresh [C, V] tensor per operation costs more in page faults than the operation itself). A
    forward pass with entropies, which needs a second fp32 buffer for the probabilities, takes half
    as many rows, so that it holds no more memory than one without; so does the backward pass,
    which runs where the learn phase peaks (the weight's fp32 gradient and bf16 copy exist then).
    `compiled`: each chunk's elementwise work in compiled kernels (see above; needs what
    torch.compile needs, a C++ compiler on a CPU)."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    logprobs, entropy = _HeadLogprobs.apply(hidden, weight, targets, temperature, compute_dtype, with_entropy,
                                            chunk_size, compiled)
    return logprobs, (entropy if with_entropy else None)


def _rows_per_chunk(chunk_size: int, count: int, halved: bool) -> int:
    """Rows of logits per chunk: `chunk_size`, or half of it (see head_logprobs)."""
    return max(1, min(chunk_size // 2 if halved else chunk_size, count))


class _Logits:
    """Tempered logits of successive chunks into one reused buffer (plus a low-precision one for
    the matmul's output when it runs in bf16). `compiled`: the matmul's output alone, untempered
    (`raw`), for the compiled chunk functions to read."""

    def __init__(self, weight, temperature, compute_dtype, rows, compiled=False):
        self.weight = weight.to(compute_dtype)
        self.temperature = temperature
        self.dtype = torch.promote_types(compute_dtype, torch.float32)
        self.low = None if compute_dtype == self.dtype else weight.new_empty((rows, weight.shape[0]),
                                                                           dtype=compute_dtype)
        self.buffer = (None if compiled and self.low is not None
                       else weight.new_empty((rows, weight.shape[0]), dtype=self.dtype))

    def raw(self, hidden):
        """hidden @ weight.T in the matmul's precision, untempered."""
        out = (self.buffer if self.low is None else self.low)[:hidden.shape[0]]
        return torch.mm(hidden.to(self.weight.dtype), self.weight.T, out=out)

    def __call__(self, hidden):
        logits = self.raw(hidden)
        if self.low is not None:
            logits = self.buffer[:hidden.shape[0]].copy_(logits)
        return logits if self.temperature == 1.0 else logits.div_(self.temperature)

    def low_precision(self, values):
        """`values` in the matmul's precision (the gradient's way back through the output layer)."""
        return values if self.low is None else self.low[:values.shape[0]].copy_(values)


class _HeadLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, compute_dtype, with_entropy, chunk_size, compiled):
        count = hidden.shape[0]
        chunk_rows = _rows_per_chunk(chunk_size, count, halved=with_entropy and not compiled)
        logits_of = _Logits(weight, temperature, compute_dtype, chunk_rows, compiled)
        probs = torch.empty_like(logits_of.buffer) if with_entropy and not compiled else None
        log_normaliser = hidden.new_empty(count, dtype=logits_of.dtype)
        logprobs = torch.empty_like(log_normaliser)
        mean_logit = torch.empty_like(log_normaliser) if with_entropy else log_normaliser.new_zeros(0)
        for start in range(0, count, chunk_rows):
            end = min(start + chunk_rows, count)
            if compiled:
                statistics = _chunk_statistics(logits_of.raw(hidden[start:end]), targets[start:end], temperature,
                                               with_entropy)
                log_normaliser[start:end], logprobs[start:end] = statistics[:2]
                if with_entropy:
                    mean_logit[start:end] = statistics[2]
                continue
            logits = logits_of(hidden[start:end])  # [C, V]
            target_logit = logits.gather(-1, targets[start:end].unsqueeze(-1)).squeeze(-1)
            peak = logits.amax(dim=-1, keepdim=True)
            if with_entropy:  # exp(z - max) into its own buffer: z is still needed for sum(p * z)
                shifted = torch.sub(logits, peak, out=probs[:end - start]).exp_()
                total = shifted.sum(-1)
                mean_logit[start:end] = shifted.mul_(logits).sum(-1) / total
            else:
                total = logits.sub_(peak).exp_().sum(-1)
            log_normaliser[start:end] = peak.squeeze(-1) + total.log()
            logprobs[start:end] = target_logit - log_normaliser[start:end]
        entropy = log_normaliser - mean_logit if with_entropy else mean_logit
        ctx.save_for_backward(hidden, weight, targets, log_normaliser, mean_logit)
        ctx.temperature, ctx.compute_dtype, ctx.chunk_size = temperature, compute_dtype, chunk_size
        ctx.compiled = compiled
        ctx.set_materialize_grads(False)  # an unused output (entropy kept out of the loss) gets None
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight, targets, log_normaliser, mean_logit = ctx.saved_tensors
        none = (None,) * 6
        if grad_logprobs is None and grad_entropy is None:
            return (None, None) + none
        count = hidden.shape[0]
        chunk_rows = _rows_per_chunk(ctx.chunk_size, count, halved=True)
        logits_of = _Logits(weight, ctx.temperature, ctx.compute_dtype, chunk_rows, ctx.compiled)
        if ctx.compiled:  # the gradient, written in the matmul's precision
            gradients = torch.empty_like(logits_of.buffer if logits_of.low is None else logits_of.low)
        probs = torch.empty_like(logits_of.buffer) if grad_entropy is not None and not ctx.compiled else None
        want_hidden, want_weight = ctx.needs_input_grad[:2]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=logits_of.dtype, device=weight.device) if want_weight else None
        for start in range(0, count, chunk_rows):
            end = min(start + chunk_rows, count)
            h = hidden[start:end].to(logits_of.weight.dtype)  # cast once: the logits' matmul and the weight's gradient
            g_lp = None if grad_logprobs is None else grad_logprobs[start:end]
            g_h = None if grad_entropy is None else grad_entropy[start:end]
            if ctx.compiled:
                grad_logits = gradients[:end - start]
                _chunk_logit_gradient(grad_logits, logits_of.raw(h), targets[start:end], log_normaliser[start:end],
                                      g_lp, g_h, None if g_h is None else mean_logit[start:end], ctx.temperature)
            else:
                grad_logits = _logit_gradient(logits_of, probs, h, targets[start:end], log_normaliser[start:end],
                                              mean_logit[start:end], g_lp, g_h, ctx.temperature)
            if want_hidden:
                grad_hidden[start:end] = grad_logits @ logits_of.weight
            if want_weight:
                _add_weight_gradient(grad_weight, grad_logits, h)
        if want_weight:
            grad_weight = grad_weight.to(weight.dtype)
        return (grad_hidden, grad_weight) + none


def _logit_gradient(logits_of, probs, hidden, targets, log_normaliser, mean_logit, grad_logprobs, grad_entropy,
                    temperature):
    """A chunk's gradient with respect to its untempered logits, in the matmul's precision, by
    aten's operators on the fp32 buffers."""
    logits = logits_of(hidden)
    lse = log_normaliser.unsqueeze(-1)
    if grad_entropy is not None:  # -p * (g_lp + g_H * (z - sum(p z))), in place of z
        p = torch.sub(logits, lse, out=probs[:hidden.shape[0]]).exp_()
        grad_logits = logits.sub_(mean_logit.unsqueeze(-1))
        grad_logits.mul_(grad_entropy.unsqueeze(-1))
        if grad_logprobs is not None:
            grad_logits.add_(grad_logprobs.unsqueeze(-1))
        grad_logits.mul_(p).neg_()
    else:  # -p * g_lp
        grad_logits = logits.sub_(lse).exp_().mul_(grad_logprobs.unsqueeze(-1)).neg_()
    if grad_logprobs is not None:  # + g_lp at the target: d lp / d z = onehot(y) - p
        rows = torch.arange(hidden.shape[0], device=logits.device)
        grad_logits[rows, targets] += grad_logprobs
    if temperature != 1.0:
        grad_logits.div_(temperature)
    return logits_of.low_precision(grad_logits)


@torch.compile(dynamic=True)
def _chunk_statistics(logits, targets, temperature: float, with_entropy: bool):
    """(log-normaliser, target logprob[, mean tempered logit]) per row of `logits` [C, V] (the
    matmul's output, untempered), in fp32 at least."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    peak = z.amax(dim=-1, keepdim=True)
    exp_shifted = (z - peak).exp()
    total = exp_shifted.sum(-1)
    log_normaliser = peak.squeeze(-1) + total.log()
    logprobs = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_normaliser
    if not with_entropy:
        return log_normaliser, logprobs
    return log_normaliser, logprobs, (exp_shifted * z).sum(-1) / total


@torch.compile(dynamic=True)
def _chunk_logit_gradient(out, logits, targets, log_normaliser, grad_logprobs, grad_entropy, mean_logit,
                          temperature: float):
    """Into `out` (the matmul's precision): the gradient with respect to `logits` (untempered) of
    sum(g_lp * lp + g_H * H) over the chunk's rows; a None gradient counts as zero."""
    z = logits.to(log_normaliser.dtype) / temperature
    p = (z - log_normaliser.unsqueeze(-1)).exp()
    grad = torch.zeros_like(z)
    if grad_logprobs is not None:  # d lp / d z = onehot(y) - p
        onehot = torch.arange(z.shape[-1], device=z.device) == targets.unsqueeze(-1)
        grad = grad_logprobs.unsqueeze(-1) * (onehot.to(z.dtype) - p)
    if grad_entropy is not None:  # d H / d z = -p * (z - sum(p z))
        grad = grad - grad_entropy.unsqueeze(-1) * p * (z - mean_logit.unsqueeze(-1))
    out.copy_(grad / temperature)


# Vocabulary rows of the weight's gradient per product in the backward pass (see below).
_VOCAB_ROWS_PER_PRODUCT = 8192


def _add_weight_gradient(grad_weight: torch.Tensor, grad_logits: torch.Tensor, hidden: torch.Tensor) -> None:
    """grad_weight [V, H] += grad_logits.T [V, C] @ hidden [C, H]. Where the product runs in lower
    precision than the sum (bf16 into fp32), it is taken a slice of the vocabulary at a time: the
    product's temporary is then a slice (9 MiB for the default model), not a second [V, H] tensor
    allocated, faulted in and freed for every chunk. On the 2-core AMX machine that made the output
    layer's forward and backward pass 0.67 -> 0.45-0.51 s at 1,800 rows
    (benchmarks/results/tied_embedding_amx_2026-12-05/)."""
    if grad_weight.dtype == grad_logits.dtype:
        grad_weight.addmm_(grad_logits.T, hidden)
        return
    for start in range(0, grad_weight.shape[0], _VOCAB_ROWS_PER_PRODUCT):
        end = start + _VOCAB_ROWS_PER_PRODUCT
        grad_weight[start:end] += grad_logits[:, start:end].T @ hidden
