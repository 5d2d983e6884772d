"""One-step off-policy rollouts: the engine samples the next batch while the learner trains on this one.

Synchronous GRPO alternates: sample batch s with the weights of step s-1, train on it, push the new
weights, and only then sample batch s+1, so the engine waits on the learner and the learner on the
engine. With `rollout.async_generation: true` the trainer instead, at the start of step s,

    1. takes batch s, sampled in the background with the weights of step s-2,
    2. pushes the weights of step s-1 into the engine,
    3. starts sampling (and scoring) batch s+1 in a background thread,
    4. trains on batch s, giving the weights of step s,

so generation overlaps the reference pass and the update, and every batch but the first one after a
start or a resume is one optimiser step stale. The staleness is corrected by
truncated importance sampling: each token's policy-gradient term is weighted by
min(pi_current / pi_engine, C), with pi_engine the engine's own log-prob of the token it sampled
(`algorithm.tis_cap` = C), the "decoupled" form of the PPO objective used by asynchronous RL systems.

What the thread may touch. The background thread uses the engine, the prompt sampler and the reward
scorer; the main thread touches none of them while a batch is in flight and waits for it before it
syncs weights, evaluates, or stops. The checkpoint records the sampler position from before the
in-flight batch was drawn, so a resumed run samples that batch again (on-policy this time) instead
of skipping its prompts. Async runs are not bit-exact across a resume (the HF backend seeds its
sampling through torch's global generator, which the two threads share), only equal in distribution.
"""
from __future__ import annotations

import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class SamplerSnapshot:
    """A sampler position frozen at one moment, saved in checkpoints in place of the live sampler."""

    def __init__(self, state: dict[str, Any]):
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


class RolloutPrefetcher:
    """Runs `produce(step)` for the next step in one background thread, one batch at a time.

    Args:
        produce: builds the rollouts of a step (generation and scoring); runs in the thread.
        sampler: the prompt sampler `produce` draws from (its state_dict is snapshotted at launch).
    """

    def __init__(self, produce: Callable[[int], Any], sampler):
        self._produce = produce
        self._sampler = sampler
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r1train-rollouts")
        self._step: int | None = None
        self._future: Future | None = None
        self._sampler_before: dict[str, Any] | None = None

    @property
    def in_flight(self) -> bool:
        return self._future is not None

    def start(self, step: int) -> None:
        """Begin producing the rollouts of `step` in the background."""
        if self._future is not None:
            raise RuntimeError(f"rollouts for step {self._step} are still in flight")
        self._sampler_before = copy.deepcopy(self._sampler.state_dict())
        self._step = step
        self._future = self._pool.submit(self._produce, step)

    def take(self, step: int) -> tuple[Any | None, float]:
        """The prefetched rollouts of `step` (waiting for them) and the seconds waited.

        Returns (None, 0.0) when nothing was prefetched for `step`; the caller then samples it itself.
        """
        if self._future is None or self._step != step:
            self.drain()
            return None, 0.0
        t0 = time.perf_counter()
        future, self._future, self._step, self._sampler_before = self._future, None, None, None
        return future.result(), time.perf_counter() - t0

    def wait(self) -> None:
        """Block until the in-flight batch (if any) is ready, keeping it for take()."""
        if self._future is not None:
            self._future.exception()  # waits; an error surfaces at take()

    def drain(self) -> None:
        """Wait for and discard an in-flight batch (its prompts are sampled again after a resume)."""
        if self._future is not None:
            self._future.exception()
            self._future, self._step, self._sampler_before = None, None, None

    def sampler_for_checkpoint(self):
        """What a checkpoint should record: the sampler as it was before the in-flight draw."""
        if self._sampler_before is None:
            return self._sampler
        return SamplerSnapshot(self._sampler_before)

    def close(self) -> None:
        """Let an in-flight batch finish (the engine cannot be closed under it) and stop the thread."""
        self.drain()
        self._pool.shutdown(wait=True)
