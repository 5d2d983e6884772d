"""Distillation as in DeepSeek-R1's distilled models: SFT of a small student on a teacher's traces.

The teacher's traces are a rejection sample (`run_rejection_sampling`, into `<stage>/traces/`):
correct, well-formed completions of data.train's prompts. The student is then fine-tuned on them,
together with any files of data.mix (`run_sft`, into `<stage>/student/`), with the recipe's
training settings. The traces are text, so the student may use another tokenizer than the teacher.
Both halves resume on their own: finished trace chunks are not sampled again, and the SFT continues
from its last checkpoint.

Without a model hub, a smaller student can be cut from a model at hand: with `student_layers: N`
the student is the stage's `model` keeping only its first N decoder layers (its embeddings, final
norm and output head unchanged), saved once into `<stage>/student_init/`. Deliberate
simplification: the first N layers, not a spread of them, so every kept layer keeps its index
(attention caches are addressed by it); the cut model starts far from its parent and is made
useful only by the SFT on the traces.
"""
from __future__ import annotations

import copy
from pathlib import Path

from r1train.config import Recipe
from r1train.errors import RunError
from r1train.rejection import run_rejection_sampling
from r1train.sft import run_sft
from r1train.stage_memory import release_finished_stage


def shrink_model(model_name: str, layers: int, folder: Path) -> Path:
    """Save `model_name` cut to its first `layers` decoder layers into `folder`; returns `folder`."""
    from r1train.models import load_model, load_tokenizer, resolve_model_dir, save_model

    model_dir = resolve_model_dir(model_name)
    model = load_model(model_dir)
    decoder = model.get_decoder()
    if not hasattr(decoder, "layers") or layers >= len(decoder.layers):
        have = len(decoder.layers) if hasattr(decoder, "layers") else "an unknown number of"
        raise RunError(f"student_layers: {layers} must be fewer than the {have} layers of {model_name}")
    decoder.layers = decoder.layers[:layers]
    model.config.num_hidden_layers = layers
    if isinstance(getattr(model.config, "layer_types", None), list):  # per-layer attention kinds
        model.config.layer_types = model.config.layer_types[:layers]
    save_model(model, load_tokenizer(model_dir), folder)
    return folder


def run_distill(recipe: Recipe, stage_dir: Path, student_name: str, teacher_name: str,
                student_layers: int | None = None) -> Path:
    """Sample traces from `teacher_name`, fine-tune the student on them; returns the student's folder.

    The student is `student_name`, or its first `student_layers` decoder layers when that is set.
    """
    stage_dir = Path(stage_dir)
    traces = run_rejection_sampling(recipe, stage_dir / "traces", teacher_name, stage_name=stage_dir.name)
    release_finished_stage()  # the teacher's engine, before the student trains (r1train/stage_memory.py)
    if student_layers is not None:
        init = stage_dir / "student_init"
        if not (init / "config.json").is_file():  # saved whole or not at all, so a rerun reuses it
            shrink_model(student_name, student_layers, init)
        student_name = str(init)
    student = copy.deepcopy(recipe)
    # The traces file names its columns itself, whatever data.train used.
    student.data.train = str(traces)
    student.data.question_column = "question"
    student.data.completion_column = "completion"
    return run_sft(student, stage_dir / "student", student_name)
