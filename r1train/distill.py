"""Distillation as in DeepSeek-R1's distilled models: SFT of a small student on a teacher's traces.

The teacher's traces are a rejection sample (`run_rejection_sampling`, into `<stage>/traces/`):
correct, well-formed completions of data.train's prompts. The student is then fine-tuned on them
(`run_sft`, into `<stage>/student/`) with the recipe's training settings. The traces are text, so
the student may use another tokenizer than the teacher. Both halves resume on their own: finished
trace chunks are not sampled again, and the SFT continues from its last checkpoint.
"""
from __future__ import annotations

import copy
from pathlib import Path

from r1train.config import Recipe
from r1train.rejection import run_rejection_sampling
from r1train.sft import run_sft


def run_distill(recipe: Recipe, stage_dir: Path, student_name: str, teacher_name: str) -> Path:
    """Sample traces from `teacher_name`, fine-tune `student_name` on them; returns the student's folder."""
    stage_dir = Path(stage_dir)
    traces = run_rejection_sampling(recipe, stage_dir / "traces", teacher_name, stage_name=stage_dir.name)
    student = copy.deepcopy(recipe)
    # The traces file names its columns itself, whatever data.train used.
    student.data.train = str(traces)
    student.data.question_column = "question"
    student.data.completion_column = "completion"
    return run_sft(student, stage_dir / "student", student_name)
