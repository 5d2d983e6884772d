"""StallWatch: the warnings that say when GRPO stopped learning, each once, after a full window."""
from r1train.diagnostics import ENTROPY_HELP, SIGNAL_HELP, StallWatch, no_signal_share


def test_warns_once_after_ten_steps_without_signal_and_names_the_step_and_keys():
    watch = StallWatch()
    said = {step: watch.update(step, {"groups/zero_variance_frac": 0.75, "entropy": 0.5}) for step in range(1, 16)}
    assert all(not said[step] for step in range(1, 10))
    assert len(said[10]) == 1 and said[10][0].startswith("step 10:") and SIGNAL_HELP in said[10][0]
    assert "algorithm.dynamic_sampling" in said[10][0]
    assert all(not said[step] for step in range(11, 16))  # once per run


def test_a_step_with_signal_restarts_the_count():
    watch = StallWatch(window=3)
    assert watch.update(1, {"groups/zero_variance_frac": 0.9}) == []
    assert watch.update(2, {"groups/zero_variance_frac": 0.9}) == []
    assert watch.update(3, {"groups/zero_variance_frac": 0.6}) == []  # exactly 60% is not "more than"
    assert watch.update(4, {"groups/zero_variance_frac": 0.9}) == []
    assert watch.update(5, {"groups/zero_variance_frac": 0.9}) == []
    assert len(watch.update(6, {"groups/zero_variance_frac": 0.9})) == 1


def test_entropy_collapse_is_its_own_warning():
    watch = StallWatch(window=2)
    assert watch.update(1, {"entropy": 0.05, "groups/zero_variance_frac": 0.0}) == []
    (warning,) = watch.update(2, {"entropy": 0.09})
    assert warning.startswith("step 2:") and ENTROPY_HELP in warning and "entropy_coef" in warning
    # Missing metrics (an evaluation-only row) break no run and count as no stall.
    assert watch.update(3, {}) == []


def test_dropped_groups_count_as_groups_without_signal():
    # Dynamic sampling trains on informative groups only: the drawn share tells the truth.
    assert no_signal_share({"groups/zero_variance_frac": 0.0, "sampling/groups_dropped": 6,
                            "sampling/prompts_drawn": 8}) == 0.75
    assert no_signal_share({"groups/zero_variance_frac": 0.5, "sampling/groups_dropped": 0,
                            "sampling/prompts_drawn": 8}) == 0.5
    assert no_signal_share({}) is None
    watch = StallWatch(window=1)
    assert len(watch.update(1, {"groups/zero_variance_frac": 0.0, "sampling/groups_dropped": 7,
                                "sampling/prompts_drawn": 8})) == 1
