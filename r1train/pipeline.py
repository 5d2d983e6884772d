"""Run a recipe: one GRPO run, or its `stages:` in order, each feeding the next.

Every stage writes into `runs/<run>/<stage>/` and marks itself finished with `DONE.json` (holding
what it produced: a model folder or a dataset file). Running the recipe again skips finished
stages and lets an interrupted one resume from its own checkpoints; `--from STAGE` deletes that
stage's folder and those after it, and reruns them. A recipe without stages is a single GRPO run
written directly into `runs/<run>/`.

A stage names its inputs: `model:` (and a distill stage's `teacher:`) is `base` (the recipe's
model.name), `stage:<name>` (the model an earlier stage saved) or a model folder or alias; in its
`data:` section, `train`, `eval`, `general` and the entries of `mix` may be `stage:<name>` (the
dataset an earlier stage wrote, e.g. a rejection sample). The recipe loader checks that every
reference names an earlier stage; here they become the paths recorded in that stage's DONE.json.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import shutil
import sys
from pathlib import Path

from r1train import distributed
from r1train.checkpoint import CheckpointWriteError
from r1train.config import Recipe, StageConfig, referenced_stage, stage_recipe, to_yaml
from r1train.errors import INTERRUPTED_EXIT, USER_ERRORS, RunError
from r1train.run_lock import LOCK_FILE, hold_run_folder
from r1train.run_state import TrainingInterrupted
from r1train.stage_memory import release_finished_stage

DONE = "DONE.json"
LOG_FILE = "log.txt"  # what r1train logged during the run, tracebacks included


def run_recipe(recipe: Recipe, fresh: bool = False, from_stage: str | None = None) -> int:
    run_dir = recipe.run_dir
    if recipe.stages and distributed.world_size() > 1:
        raise RunError("a multi-process launch runs one GRPO recipe (no `stages:`): SFT, rejection sampling and "
                       "distillation are not data-parallel; run the pipeline in one process")
    main = distributed.is_main_process()  # under `accelerate launch`, one process keeps the folder
    with contextlib.ExitStack() as lock:
        with distributed.main_process_first():
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
            if main:
                # Locked before anything is deleted or written: a second run on this folder is
                # refused before it can touch the first one's files.
                lock.enter_context(hold_run_folder(run_dir))
            if main and fresh and not created:
                print(f"r1train: --fresh: deleting {run_dir}", flush=True)
                _empty_folder(run_dir, keep=LOCK_FILE)
                created = True
            if main and from_stage is not None:
                _reset_from(recipe, run_dir, from_stage)
            if main:
                _write_config(recipe, run_dir)
                lock.enter_context(_log_file(run_dir / LOG_FILE))
        return _run_locked(recipe, run_dir, main, created)


@contextlib.contextmanager
def _log_file(path: Path):
    """Everything r1train logs during the run, DEBUG included (a reward's traceback, for one), goes
    to `path`; the console keeps Python's default: warnings and errors, one line each."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("r1train")
    level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(level)
        handler.close()


def _run_locked(recipe: Recipe, run_dir: Path, main: bool, created: bool) -> int:
    try:
        if recipe.stages:
            _run_stages(recipe, run_dir)
        else:
            _run_single(recipe, run_dir)
    except USER_ERRORS:
        # Bad input found while setting up (e.g. a prompt too long): leave nothing half-made.
        if main and created and not has_progress(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    except TrainingInterrupted as exc:
        print(f"r1train: {exc}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except (FloatingPointError, CheckpointWriteError) as exc:
        print(f"r1train: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Outside a checkpoint (the final model, a dataset, the logs): the checkpoints are intact.
        print(f"r1train: error: the disk is full (writing {exc.filename or 'a file'}); free some space, then run "
              "the same command again to resume from the newest checkpoint", file=sys.stderr)
        return 1
    return 0


def _run_single(recipe: Recipe, run_dir: Path) -> None:
    from r1train.grpo import run_grpo

    if (run_dir / DONE).is_file():
        print(f"r1train: {run_dir} is already finished ({_done(run_dir)['output']}); use --fresh to start over")
        return
    if recipe.data.mix:
        raise RunError("data.mix: only sft and distill stages train on mixed example files; a recipe without "
                       "stages is one GRPO run")
    output = run_grpo(recipe, run_dir)
    if distributed.is_main_process():
        _mark_done(run_dir, output)
        _finish(run_dir)


def _run_stages(recipe: Recipe, run_dir: Path) -> None:
    outputs: dict[str, str] = {}
    for stage in recipe.stages:
        stage_dir = run_dir / stage.name
        if (stage_dir / DONE).is_file():
            outputs[stage.name] = _done(stage_dir)["output"]
            print(f"r1train: stage {stage.name} already finished, skipping", flush=True)
            continue
        print(f"r1train: stage {stage.name} ({stage.type})", flush=True)
        stage_dir.mkdir(parents=True, exist_ok=True)
        output = _run_stage(recipe, stage, stage_dir, outputs)
        outputs[stage.name] = str(output)
        _mark_done(stage_dir, output)
        release_finished_stage()  # its model, optimiser state and engine (r1train/stage_memory.py)
    _write_scores_table(recipe, run_dir)


def _run_stage(recipe: Recipe, stage: StageConfig, stage_dir: Path, outputs: dict[str, str]) -> Path:
    cfg = _resolve_data_refs(stage_recipe(recipe, stage), outputs)
    model = _resolve_model_ref(stage.model, recipe, outputs)
    if stage.type == "grpo":
        from r1train.grpo import run_grpo

        return run_grpo(cfg, stage_dir, model)
    if stage.type == "sft":
        from r1train.sft import run_sft

        return run_sft(cfg, stage_dir, model)
    if stage.type == "rejection_sampling":
        from r1train.rejection import run_rejection_sampling

        return run_rejection_sampling(cfg, stage_dir, model)
    if stage.type == "distill":
        from r1train.distill import run_distill

        return run_distill(cfg, stage_dir, model, _resolve_model_ref(stage.teacher, recipe, outputs),
                           stage.student_layers)
    if stage.type == "eval":
        from r1train.evaluation import run_eval_stage

        return run_eval_stage(cfg, stage_dir, model)
    raise RunError(f"unknown stage type {stage.type}")


def _resolve_model_ref(ref: str, recipe: Recipe, outputs: dict[str, str]) -> str:
    if ref == "base":
        return recipe.model.name
    name = referenced_stage(ref)
    if name is not None:
        produced = outputs[name]
        if not (Path(produced) / "config.json").is_file():
            raise RunError(f"'{ref}' produced {produced}, which is not a model folder")
        return produced
    return ref


def _resolve_data_refs(cfg: Recipe, outputs: dict[str, str]) -> Recipe:
    """Replace `stage:<name>` in data.train/eval/general/mix by the dataset file that stage wrote."""

    def resolve(key: str, ref: str | None) -> str | None:
        name = referenced_stage(ref)
        if name is None:
            return ref
        produced = outputs[name]
        if Path(produced).is_dir():
            raise RunError(f"{key} '{ref}' names a stage that produced a model, not a dataset")
        return produced

    for key in ("train", "eval", "general"):
        setattr(cfg.data, key, resolve(f"data.{key}", getattr(cfg.data, key)))
    cfg.data.mix = [resolve(f"data.mix[{i}]", ref) for i, ref in enumerate(cfg.data.mix)]
    return cfg


def _reset_from(recipe: Recipe, run_dir: Path, from_stage: str) -> None:
    names = [s.name for s in recipe.stages]
    if from_stage not in names:
        raise RunError(f"--from {from_stage}: no such stage (stages: {', '.join(names) or 'none'})")
    for name in names[names.index(from_stage):]:
        if (run_dir / name).exists():
            print(f"r1train: --from {from_stage}: deleting {run_dir / name}", flush=True)
            shutil.rmtree(run_dir / name)


def _write_config(recipe: Recipe, run_dir: Path) -> None:
    path = run_dir / "config.yaml"
    text = to_yaml(recipe)
    if path.is_file() and path.read_text() != text:
        print(f"r1train: note: the recipe differs from the one this run folder was started with "
              f"({path}); continuing with the new one (use --fresh to start over)", flush=True)
    tmp = path.with_name("config.yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _empty_folder(folder: Path, keep: str) -> None:
    for entry in folder.iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def has_progress(run_dir: Path) -> bool:
    """Whether a run folder holds anything a resume starts from (and a failed start must keep): a
    finished stage or a complete checkpoint (`r1train/checkpoint.py` writes trainer_state.json last)."""
    return run_dir.is_dir() and (any(run_dir.rglob(DONE))
                                 or any(run_dir.rglob("checkpoints/step-*/trainer_state.json")))


def _mark_done(folder: Path, output: Path | str) -> None:
    tmp = folder / (DONE + ".tmp")
    tmp.write_text(json.dumps({"output": str(output)}))
    tmp.replace(folder / DONE)


def _done(folder: Path) -> dict:
    return json.loads((folder / DONE).read_text())


def _finish(run_dir: Path) -> None:
    from r1train.report import write_report

    report = write_report(run_dir)
    print(f"r1train: finished. Report: {report}", flush=True)


def _write_scores_table(recipe: Recipe, run_dir: Path) -> None:
    """One table of the held-out scores each stage ended with (from its eval rows or scores.json)."""
    from r1train.tracking import read_metrics

    lines = ["| stage | type | accuracy | format rate | pass@1 | completion length |", "|---|---|---|---|---|---|"]
    for stage in recipe.stages:
        stage_dir = run_dir / stage.name
        scores = {}
        if (stage_dir / "scores.json").is_file():
            scores = json.loads((stage_dir / "scores.json").read_text())
        else:  # a distill stage's student trains in a folder of its own
            metrics_file = stage_dir / ("student" if stage.type == "distill" else "") / "metrics.jsonl"
            evals = [row for row in read_metrics(metrics_file) if "eval/accuracy" in row]
            scores = evals[-1] if evals else {}
        cells = [_fmt(scores.get(k)) for k in ("eval/accuracy", "eval/format_rate", "eval/pass@1", "eval/completion_len")]
        lines.append(f"| {stage.name} | {stage.type} | " + " | ".join(cells) + " |")
    (run_dir / "scores.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
