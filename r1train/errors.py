"""The exceptions that mean "the user asked for something wrong" (exit code 2, one line), and the
command line's exit codes."""
from __future__ import annotations

from r1train.config import ConfigError
from r1train.data import DataError
from r1train.models import ModelNotFoundError
from r1train.prompts import PromptError

USAGE_ERROR_EXIT = 2  # bad input: one line on stderr, nothing started
INTERRUPTED_EXIT = 130  # stopped by SIGINT/SIGTERM (128 + SIGINT, as shells report Ctrl-C); resumable


class RunError(ValueError):
    """A run folder or stage input that cannot be used as asked."""


class MissingExtraError(ImportError):
    """An optional dependency (vLLM) is not installed; the message names the extra."""


class RolloutWorkerError(ConnectionError):
    """A remote rollout worker is unreachable, failed a request, or serves another model than the run's."""


def _reward_spec_error() -> tuple[type, ...]:
    try:
        from rewards import RewardSpecError
    except ImportError:
        return ()
    return (RewardSpecError,)


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataError, ModelNotFoundError, PromptError, RunError, MissingExtraError, RolloutWorkerError,
) + _reward_spec_error()
