"""Resident memory of a pipeline run over time, one panel per run, with its stages marked.

usage: plot_rss.py OUT.png LABEL:RSS_TRACE:STAGE_ENDS [LABEL:RSS_TRACE:STAGE_ENDS ...]
RSS_TRACE and STAGE_ENDS as stages.py reads them.
"""
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_trace(path):
    rows = [line.split() for line in Path(path).read_text().splitlines() if len(line.split()) == 2]
    return [(int(t), int(m)) for t, m in rows if m.isdigit()]


def stage_ends(path):
    return [(int(t), name) for t, name in (line.split() for line in Path(path).read_text().splitlines())]


out, runs = sys.argv[1], [arg.split(":") for arg in sys.argv[2:]]
fig, axes = plt.subplots(len(runs), 1, figsize=(11, 3.2 * len(runs)), sharey=True, squeeze=False)
for ax, (label, trace, ends) in zip(axes[:, 0], runs):
    points = read_trace(trace)
    t0 = points[0][0]
    ax.plot([(t - t0) / 60 for t, _ in points], [m / 1024 for _, m in points], lw=1)
    start = 0.0
    for end, name in stage_ends(ends):
        x = (end - t0) / 60
        ax.axvline(x, color="grey", lw=0.6, ls="--")
        ax.text((start + x) / 2, 0.3, name, ha="center", va="bottom", fontsize=7, rotation=90)
        start = x
    peak = max(m for _, m in points) / 1024
    ax.set_title(f"{label}: peak {peak:.2f} GiB, {(points[-1][0] - t0) / 60:.1f} min")
    ax.set_ylabel("RSS (GiB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
axes[-1, 0].set_xlabel("minutes since the run started")
fig.tight_layout()
fig.savefig(out, dpi=110)
