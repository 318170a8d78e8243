"""The accuracy report of a latency model: held-out errors per batch kind, and a plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capsim.common.files import write_atomically
from capsim.profiles.latency_model import LatencyModel

KIND_COLORS = {"prefill": "tab:blue", "decode": "tab:orange", "mixed": "tab:green"}


def plot_predicted_vs_measured(model: LatencyModel, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    holdout = model.holdout
    measured, predicted = holdout["measured"] * 1e3, holdout["predicted"] * 1e3
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for kind, color in KIND_COLORS.items():
        rows = holdout["kinds"] == kind
        if rows.any():
            ax.scatter(measured[rows], predicted[rows], s=18, color=color, label=kind, alpha=0.8)
    low, high = min(measured.min(), predicted.min()) * 0.8, max(measured.max(), predicted.max()) * 1.25
    ax.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="exact")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(low, high),
        ylim=(low, high),
        xlabel=f"{model.source} batch latency (ms)",
        ylabel="predicted batch latency (ms)",
    )
    all_errors = model.accuracy["compiled"]["all"]
    profile = model.profile
    ax.set_title(
        f"{profile['model']} on {profile['hardware']} TP{profile['tp']} ({profile['source']})\n"
        f"held-out MAPE {all_errors['mape']:.1f}%, P95 {all_errors['p95_ape']:.1f}% ({model.regressor})",
        fontsize=9,
    )
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def accuracy_rows(model: LatencyModel) -> list[tuple[str, str, float, float, int]]:
    """(regressor, batch kind, MAPE %, P95 APE %, rows) for every candidate and the compiled one."""
    return [
        (name, kind, e["mape"], e["p95_ape"], e["rows"])
        for name, by_kind in model.accuracy.items()
        for kind, e in by_kind.items()
    ]


def holdout_summary(model: LatencyModel) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in model.holdout.items()}
