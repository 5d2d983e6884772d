"""Writing report files (`r1train report`, one run or several seeds) so that a reader never sees half of one.

Each file is written beside its final name and moved over it in one step (`os.replace`), so an
interrupted report leaves the previous file whole, not a truncated PNG or summary.
"""
from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)        # figures are drawn without pyplot, so they get their canvas here
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
