"""The experiment trackers a run reports to, besides metrics.jsonl: TensorBoard, W&B, Trackio, MLflow.

Each gets the same numbers under the same names (the numeric values of a metrics.jsonl row, at its
step), with one exception: MLflow refuses `@` in a name, so `eval/pass@1` is `eval/pass_at_1` there.
Where no server is configured each writes into the run folder, so nothing waits on a network:
- wandb: online only when `WANDB_MODE` says so or an API key is set and the server answers;
  otherwise offline into `<run>/wandb` (upload later with `wandb sync`);
- trackio: its local SQLite store, where `trackio show` finds it (`TRACKIO_DIR`, by default
  ~/.cache/huggingface/trackio), unless trackio is set up to sync to a Space;
- mlflow: `MLFLOW_TRACKING_URI` when set, else a file store in `<run>/mlruns` (`mlflow ui
  --backend-store-uri <run>/mlruns`).
A resumed run continues the same wandb / mlflow run (its id is kept in the run folder).
"""
from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# Tracker name -> (the module it needs, the package that installs it; pyproject's extras name them too).
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
    "mlflow": ("mlflow", "mlflow-skinny"),
}


def missing_tracker(names: list[str]) -> str | None:
    """A one-line problem for the first tracker whose package is not installed, else None."""
    for name in names:
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            return (f"logging.report_to: {name} is not installed; run `pip install {package}`, or take it out of "
                    "report_to")
    return None


def scalar_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics row that trackers plot (not step or time, no None, no text)."""
    return {key: value for key, value in row.items()
            if key not in ("step", "time") and isinstance(value, (int, float))}


class TensorBoardTracker:
    def __init__(self, run_dir: Path, start_step: int, **_):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a killed run logged past the checkpoint it resumes from.
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else 0)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _FinishingRunTracker:
    """A tracker whose `run` takes `log(metrics, step=)` and ends with `finish()` (W&B, Trackio)."""

    run: Any

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class WandbTracker(_FinishingRunTracker):
    def __init__(self, run_dir: Path, start_step: int, project: str, config: dict[str, Any]):
        import wandb

        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_can_go_online() else "offline")
        self.run = wandb.init(project=project, name=run_dir.name, dir=str(run_dir), config=config, mode=mode,
                              id=_run_id(run_dir, "wandb", start_step), resume="allow",
                              settings=wandb.Settings(console="off", silent=True))
        if mode == "offline":
            print(f"r1train: wandb offline run in {self.run.dir.rsplit('/files', 1)[0]}; upload it with "
                  "`wandb sync <that folder>`", file=sys.stderr, flush=True)


class TrackioTracker(_FinishingRunTracker):
    def __init__(self, run_dir: Path, start_step: int, project: str, config: dict[str, Any]):
        import trackio

        # No system metrics: every tracker gets the same names.
        trackio.init(project=project, name=run_dir.name, config=config,
                     resume="allow" if start_step else "never", auto_log_cpu=False, auto_log_gpu=False)
        # The module's log and finish act on the run that init made current.
        self.run = trackio


class MlflowTracker:
    def __init__(self, run_dir: Path, start_step: int, project: str, config: dict[str, Any]):
        import mlflow

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # MLflow 3 keeps its file store only on request; unlike its SQLite store it needs no
            # database packages, so it works with mlflow-skinny too.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        mlflow.set_experiment(project)
        id_file = run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() and start_step else None
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_dir.name)
        id_file.write_text(self.run.info.run_id)
        if not run_id:
            mlflow.log_params({key: str(value)[:500] for key, value in _flatten(config).items()})

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics({key.replace("@", "_at_"): value for key, value in metrics.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


TRACKER_CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "trackio": TrackioTracker,
                   "mlflow": MlflowTracker}


def open_trackers(names: list[str], run_dir: Path, start_step: int, project: str, config: dict[str, Any]) -> list:
    """Start every named tracker for the run folder (see the module docstring for where each writes)."""
    from r1train.errors import MissingExtraError

    problem = missing_tracker(names)
    if problem:
        raise MissingExtraError(problem)
    return [TRACKER_CLASSES[name](run_dir, start_step, project=project, config=config) for name in names]


def _run_id(run_dir: Path, tracker: str, start_step: int) -> str:
    """The id of this run folder's run in `tracker`: new at step 0, kept so that a resume continues it."""
    path = run_dir / f"{tracker}_run_id"
    if not path.is_file() or not start_step:
        import uuid

        path.write_text(uuid.uuid4().hex[:12])
    return path.read_text().strip()


def _wandb_can_go_online(timeout_s: float = 3.0) -> bool:
    """Whether there is an API key and the W&B server answers (else the run is logged offline)."""
    import netrc

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        logged_in = bool(netrc.netrc().authenticators(host))
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    if not (os.environ.get("WANDB_API_KEY") or logged_in):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
