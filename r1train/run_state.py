"""A run's durable state: checkpoint restore and save, and a clean stop on SIGINT/SIGTERM.

A signal only sets a flag; the trainer checks it between steps, so a stop never leaves a step
half-applied. The stop writes a checkpoint of the last finished step and exits with a message
that says how to resume.
"""
from __future__ import annotations

import signal
from pathlib import Path

from r1train.checkpoint import clean_partial, latest_checkpoint, load_checkpoint, save_checkpoint


class TrainingInterrupted(RuntimeError):
    pass


class RunState:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self._signal: int | None = None
        self._last_saved = -1
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: leave signal handling to the caller
                pass

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self._signal = signum

    def restore(self, learner, sampler) -> int:
        """Load the newest complete checkpoint, if any; returns the step to continue from."""
        clean_partial(self.checkpoint_dir)
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            return 0
        weights, optimizer_state, trainer_state = load_checkpoint(path)
        learner.load_trainable_state(weights)
        learner.load_state_dict(optimizer_state)
        sampler.load_state_dict(trainer_state["sampler"])
        self._last_saved = trainer_state["step"]
        print(f"r1train: resuming {self.run_dir} from step {trainer_state['step']} ({path.name})", flush=True)
        return trainer_state["step"]

    def save(self, step: int, learner, sampler, keep: int) -> Path:
        path = save_checkpoint(self.checkpoint_dir, step, learner.trainable_state(), learner.state_dict(),
                               {"sampler": sampler.state_dict()}, keep)
        self._last_saved = step
        return path

    def stop_if_interrupted(self, step: int, learner, sampler, keep: int = 2) -> None:
        if self._signal is None:
            return
        if self._last_saved != step and step > 0:
            self.save(step, learner, sampler, keep)
        name = signal.Signals(self._signal).name
        raise TrainingInterrupted(
            f"stopped by {name} after step {step}; checkpoint kept in {self.checkpoint_dir}. "
            "Run the same command again to resume."
        )
