"""Warnings that say when GRPO has stopped learning, while the run goes on.

Two ways a run stalls are common enough to watch for at every step:

- most groups carry no signal: every completion of a prompt got the same reward, so its
  advantages are zero and the prompt teaches nothing (`no_signal_share`);
- the policy's entropy has collapsed: it samples nearly the same completion every time, so groups
  stop differing and exploration ends (`entropy`, nats per token).

Each is reported once per run, with the step, after it has held for `window` steps in a row (one
noisy step is no stall), naming the recipe keys that usually help. Deliberately simple: fixed
thresholds from the toy runs (issue 18), no smoothing beyond the consecutive-step window.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ZERO_VARIANCE_KEY = "groups/zero_variance_frac"
ENTROPY_KEY = "entropy"
DROPPED_KEY, DRAWN_KEY = "sampling/groups_dropped", "sampling/prompts_drawn"

SIGNAL_HELP = ("algorithm.dynamic_sampling: true (resample groups whose rewards are all equal), a larger "
               "rollout.group_size, a higher rollout.temperature, or harder/easier training data "
               "(data.train) if nearly every group is all right/all wrong")
ENTROPY_HELP = ("algorithm.epsilon_high above epsilon_low (clip-higher), algorithm.entropy_coef > 0, a lower "
                "training.learning_rate, or algorithm.beta > 0 (KL to the start model)")


@dataclass
class StallWatch:
    """Feed it every step's metrics; it returns the warnings to log (each kind at most once).

    Example:
        watch = StallWatch(window=2)
        watch.update(1, {"groups/zero_variance_frac": 0.75})  # -> []
        watch.update(2, {"groups/zero_variance_frac": 0.8})   # -> ["step 2: for 2 steps ..."]
        watch.update(3, {"groups/zero_variance_frac": 0.9})   # -> [] (said once already)
    """

    window: int = 10
    max_zero_variance: float = 0.6
    min_entropy: float = 0.1
    _runs: dict[str, int] = field(default_factory=lambda: {ZERO_VARIANCE_KEY: 0, ENTROPY_KEY: 0})
    _warned: set[str] = field(default_factory=set)

    def update(self, step: int, metrics: dict[str, float]) -> list[str]:
        stalled = {
            ZERO_VARIANCE_KEY: _number(no_signal_share(metrics), lambda v: v > self.max_zero_variance),
            ENTROPY_KEY: _number(metrics.get(ENTROPY_KEY), lambda v: v < self.min_entropy),
        }
        warnings = []
        for key, now in stalled.items():
            self._runs[key] = self._runs[key] + 1 if now else 0
            if self._runs[key] >= self.window and key not in self._warned:
                self._warned.add(key)
                warnings.append(self._message(step, key))
        return warnings

    def _message(self, step: int, key: str) -> str:
        if key == ZERO_VARIANCE_KEY:
            return (f"step {step}: for {self.window} steps more than {self.max_zero_variance:.0%} of the groups had "
                    f"all-equal rewards and taught nothing; what usually helps: {SIGNAL_HELP}")
        return (f"step {step}: for {self.window} steps the policy's entropy was under {self.min_entropy} nats per "
                f"token (it samples nearly the same completion every time); what usually helps: {ENTROPY_HELP}")


def no_signal_share(metrics: dict[str, float]) -> float | None:
    """Share of a step's groups whose rewards were all equal.

    With dynamic sampling such groups are dropped before training, so the trained batch's
    `groups/zero_variance_frac` stays low however many were drawn; the share of drawn groups that
    were dropped says how much signal the policy's own samples carry. The larger of the two counts.

    Example: no_signal_share({"groups/zero_variance_frac": 0.0, "sampling/groups_dropped": 6,
                              "sampling/prompts_drawn": 8}) == 0.75
    """
    shares = [metrics.get(ZERO_VARIANCE_KEY)]
    drawn = metrics.get(DRAWN_KEY)
    if isinstance(drawn, (int, float)) and drawn > 0:
        shares.append(metrics.get(DROPPED_KEY, 0) / drawn)
    shares = [v for v in shares if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(shares) if shares else None


def _number(value, test) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and test(value)
