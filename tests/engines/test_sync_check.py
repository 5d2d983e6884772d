"""compare_logprobs and the bf16 warning bound."""
from __future__ import annotations

import pytest
import torch

from r1train.engines.sync_check import SYNC_WARN_MEAN_ABS_DIFF, compare_logprobs, sync_warning


def test_ragged_lists_are_compared_token_by_token():
    engine = [[-1.0, -2.0], [-0.5]]
    learner = [[-1.1, -2.0], [-0.2]]
    stats = compare_logprobs(engine, learner)
    assert stats["mean_abs_diff"] == pytest.approx((0.1 + 0.0 + 0.3) / 3)
    assert stats["max_abs_diff"] == pytest.approx(0.3)


def test_a_padded_learner_tensor_is_cut_to_each_completions_length():
    engine = [torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-0.5])]
    learner = torch.tensor([[-1.0, -2.5, -3.0], [-0.25, 0.0, 0.0]])  # row 2 padded with zeros
    stats = compare_logprobs(engine, learner)
    assert stats["mean_abs_diff"] == pytest.approx((0.5 + 0.25) / 4)
    assert stats["max_abs_diff"] == pytest.approx(0.5)


def test_two_tensors_are_compared_under_the_mask():
    engine = torch.tensor([[-1.0, -9.0], [-2.0, -2.0]])
    learner = torch.tensor([[-1.5, 0.0], [-2.0, -1.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    stats = compare_logprobs(engine, learner, mask)
    assert stats["mean_abs_diff"] == pytest.approx(1.5 / 3)
    assert stats["max_abs_diff"] == pytest.approx(1.0)


def test_mismatched_lengths_are_an_error_not_a_silent_truncation():
    with pytest.raises(ValueError, match="completion 0"):
        compare_logprobs([[-1.0, -2.0]], [[-1.0]])
    with pytest.raises(ValueError, match="2 engine completions but 1"):
        compare_logprobs([[-1.0], [-1.0]], [[-1.0]])


def test_no_tokens_gives_zero_differences():
    assert compare_logprobs([], []) == {"mean_abs_diff": 0.0, "max_abs_diff": 0.0}


def test_warning_only_above_the_bound():
    assert sync_warning({"mean_abs_diff": SYNC_WARN_MEAN_ABS_DIFF / 2, "max_abs_diff": 3.0}) is None
    message = sync_warning({"mean_abs_diff": 1.2, "max_abs_diff": 8.0})
    assert message is not None and "1.200" in message
