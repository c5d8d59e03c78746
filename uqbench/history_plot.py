"""Figure of what a method recorded during training (e.g. HyperGAN's diversity and validation accuracy)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(histories: dict[str, list[dict]], path: Path) -> Path:
    """One panel per recorded quantity (all keys but ``step``), one line per method."""
    keys = sorted({k for h in histories.values() for row in h for k in row if k != "step"})
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.5 * max(1, len(keys)), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=False):
        for method, rows in histories.items():
            pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker=".", label=method)
        ax.set_xlabel("training step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
