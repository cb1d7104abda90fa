"""Helpers shared by the benchmarks: machine description and JSON/PNG output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def per_task_bars(ax, tasks: list[str], start: dict[str, float], after: dict[str, float], after_label: str,
                  title: str) -> None:
    """Success per task (fractions in, percent drawn), start beside after, on one axis."""
    x = list(range(len(tasks)))
    ax.bar([i - 0.2 for i in x], [100 * start[t] for t in tasks], 0.4, color="tab:grey", label="start")
    ax.bar([i + 0.2 for i in x], [100 * after[t] for t in tasks], 0.4, color="tab:green", label=after_label)
    ax.set_xticks(x, [t.replace("_", "\n", 1) for t in tasks], fontsize=8)
    ax.set(ylabel="held-out success (%)", ylim=(0, 100))
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
