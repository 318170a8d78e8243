"""What every plot shares: matplotlib without a display, PNGs written atomically."""

from __future__ import annotations

import threading
from pathlib import Path

from capsim.common.files import write_atomically


def pyplot():
    """matplotlib's pyplot, drawing to files (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def import_pyplot_in_background() -> None:
    """Import pyplot on a thread, for a core that has nothing else to do (the last searches of a
    pool are running): the plot that follows them then finds it imported (a third of a second)."""
    threading.Thread(target=pyplot, daemon=True).start()


def save_figure(fig, path: Path, plt, dpi: int = 120) -> Path:
    """The figure as a PNG, written atomically, and closed."""
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return path
