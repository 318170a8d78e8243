"""What every plot shares: matplotlib without a display, PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

from capsim.common.files import write_atomically


def pyplot():
    """matplotlib's pyplot, drawing to files (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, plt, dpi: int = 120) -> Path:
    """The figure as a PNG, written atomically, and closed."""
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return path
