"""A run's durable state: checkpoint restore and save, and a clean stop on SIGINT/SIGTERM.

A signal only sets a flag; the trainer checks it between steps (before each step and after its
checkpoint, so a signal during the last step of a run or stage stops it too), so a stop never
leaves a step half-applied. The stop writes a checkpoint of the last finished step and raises
`TrainingInterrupted` with a message that says how to resume. A second signal stops at once
(KeyboardInterrupt); the last checkpoint written is then the one a resume starts from.

The handlers are installed when the training loop first checks for a stop and put back by
`close()`, so building a trainer (in a test, a notebook) leaves the process's signal handling
alone, and one stage's handler never outlives it.
"""
from __future__ import annotations

import copy
import functools
import signal
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from r1train.checkpoint import clean_partial, current_rng_state, latest_checkpoint, load_checkpoint, save_checkpoint
from r1train.errors import RunError

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(RuntimeError):
    pass


class RunState:
    """Checkpoints of one run folder (`run_dir/checkpoints/`) and the stop flag of its loop.

    `learner` is anything with trainable_state(), load_trainable_state(weights), state_dict() and
    load_state_dict(state); `sampler` anything with state_dict() and load_state_dict(state).
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self._signal: int | None = None
        self._last_saved = -1
        self._previous_handlers: dict[int, object] | None = None
        self._writer: ThreadPoolExecutor | None = None  # writes checkpoints saved with background=True
        self._pending: Future | None = None  # the checkpoint it is writing

    def _install_handlers(self) -> None:
        if self._previous_handlers is not None or threading.current_thread() is not threading.main_thread():
            return  # already installed, or not the main thread: signal handling is the caller's
        self._previous_handlers = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}

    def close(self) -> None:
        """Finish a checkpoint still being written (a failure is reported, not raised: close runs
        while another error may be on its way out) and put back the signal handlers that were there
        before training started."""
        try:
            self.wait_for_checkpoint()
        except Exception as exc:  # noqa: BLE001 - reported; the previous checkpoint stays usable
            print(f"r1train: {exc}", file=sys.stderr, flush=True)
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        if self._previous_handlers is None:
            return
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = None

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self._signal = signum

    @property
    def stop_requested(self) -> bool:
        """Whether a stop signal arrived (the loop then skips what only a finished run does)."""
        return self._signal is not None

    def clean(self) -> None:
        """Delete what a crash left half-written (one process does this before any restores)."""
        clean_partial(self.checkpoint_dir)

    def restore(self, learner, sampler) -> int:
        """Load the newest complete checkpoint, if any; returns the step to continue from."""
        self.clean()
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            return 0
        weights, optimizer_state, trainer_state = load_checkpoint(path)
        try:
            learner.load_trainable_state(weights)
            learner.load_state_dict(optimizer_state)
            sampler.load_state_dict(trainer_state["sampler"])
        except (KeyError, ValueError, RuntimeError) as exc:  # another model, LoRA setting or optimiser
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunError(
                f"{path} does not fit this recipe ({reason}); run with the recipe it was written with, "
                "or start over with --fresh"
            ) from None
        self._last_saved = trainer_state["step"]
        print(f"r1train: resuming {self.run_dir} from step {trainer_state['step']} ({path.name})", flush=True)
        return trainer_state["step"]

    def save(self, step: int, learner, sampler, keep: int, write: bool = True, background: bool = False) -> None:
        """Checkpoint `step`. With a sharded learner every process calls this (gathering the state
        is a collective) and only the one with `write` set writes it.

        With `background`, a thread writes the files while the caller goes on (the next step's
        sampling): the weights and optimiser state are written as they are in memory, not copied,
        so the caller must call `wait_for_checkpoint()` before it changes them. The RNG states and
        the sampler's position are taken now.
        """
        self.wait_for_checkpoint()  # one write at a time, in step order
        weights, optimizer_state = learner.trainable_state(), learner.state_dict()
        if not write:
            return
        write_files = functools.partial(save_checkpoint, self.checkpoint_dir, step, weights, optimizer_state,
                                        copy.deepcopy({"sampler": sampler.state_dict()}), keep,
                                        rng_state=current_rng_state())
        self._last_saved = step
        if not background:
            write_files()
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r1train-checkpoint")
        self._pending = self._writer.submit(write_files)

    def wait_for_checkpoint(self) -> None:
        """Return once no checkpoint is being written; raise the error of one that failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def stop_if_interrupted(self, step: int, learner, sampler, keep: int = 2, save: bool = True) -> None:
        """Called between steps: after a signal, checkpoint `step` (unless `save` is off) and raise
        TrainingInterrupted."""
        self._install_handlers()
        if self._signal is None:
            return
        self.wait_for_checkpoint()
        if save and self._last_saved != step and step > 0:
            self.save(step, learner, sampler, keep)
        name = signal.Signals(self._signal).name
        latest = latest_checkpoint(self.checkpoint_dir)
        kept = f"checkpoint {latest} kept" if latest else "no step finished, nothing to keep"
        raise TrainingInterrupted(
            f"stopped by {name} after step {step}; {kept}. Run the same command again to resume."
        )
