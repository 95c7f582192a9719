"""Reader-study plots (PNG, matplotlib): the paper's Figure 20 (error categories by clinical
impact, per system) and the share of sentences kept, edited and deleted per system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from readerstudy.schema import CATEGORIES, IMPACTS  # noqa: E402

IMPACT_COLOURS = {"significant": "#c0392b", "minor": "#f39c12", "none": "#95a5a6"}
ACTION_COLOURS = {"keep": "#27ae60", "edit": "#f39c12", "delete": "#c0392b"}


def category_impact_plot(summary: dict[str, Any], path: Path) -> Path:
    systems = list(summary["systems"])
    fig, axes = plt.subplots(1, len(systems), figsize=(3.4 * len(systems) + 0.6, 3.8), sharey=True, squeeze=False)
    x = np.arange(len(CATEGORIES))
    top = max([1] + [sum(s["category_by_impact"][c].values()) for s in summary["systems"].values() for c in CATEGORIES])
    for ax, name in zip(axes[0], systems):
        table = summary["systems"][name]["category_by_impact"]
        bottom = np.zeros(len(CATEGORIES))
        for impact in IMPACTS:
            h = np.array([table[c][impact] for c in CATEGORIES], dtype=float)
            ax.bar(x, h, bottom=bottom, color=IMPACT_COLOURS[impact], label=impact, width=0.7)
            bottom += h
        ax.set_title(name, fontsize=10)
        ax.set_xticks(x, [c.replace(" ", "\n") for c in CATEGORIES], rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, top * 1.1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("changed sentences with this error")
    axes[0][-1].legend(title="clinical impact", fontsize=8, title_fontsize=8)
    fig.suptitle("Error categories by clinical impact", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def action_plot(summary: dict[str, Any], path: Path) -> Path:
    systems = list(summary["systems"])
    fig, ax = plt.subplots(figsize=(6.4, 0.7 * len(systems) + 1.4))
    y = np.arange(len(systems))
    left = np.zeros(len(systems))
    for action in ("keep", "edit", "delete"):
        w = np.array([100 * summary["systems"][s]["rates"][action] for s in systems], dtype=float)
        w = np.nan_to_num(w)
        ax.barh(y, w, left=left, color=ACTION_COLOURS[action], label=action, height=0.6)
        for yi, (l0, wi) in enumerate(zip(left, w)):
            if wi >= 6:
                ax.text(l0 + wi / 2, yi, f"{wi:.0f}%", ha="center", va="center", fontsize=8, color="white")
        left += w
    ax.set_yticks(y, systems)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of sentences")
    ax.legend(ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
