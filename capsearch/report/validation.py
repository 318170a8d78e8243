"""`capsim validate`'s files: validation.csv (one row a real run), validation.json (rows, groups,
what was left out, how) and validation.png (predicted against measured TTFT and TPOT)."""

from __future__ import annotations

from pathlib import Path

from capsim.capsearch.report.figures import pyplot, save_figure
from capsim.capsearch.report.results_dir import write_csv, write_json
from capsim.traces.client import ClosedLoop

COLUMNS = (
    "id",
    "engine",
    "engine_version",
    "model",
    "hardware",
    "quant",
    "kv_quant",
    "tp",
    "isl",
    "osl",
    "concurrency",
    "concurrency_bucket",
    "fitted_on",
    "measured_ttft_ms",
    "simulated_ttft_ms",
    "ttft_error",
    "measured_tpot_ms",
    "simulated_tpot_ms",
    "tpot_error",
    "scheduler",
    "client",
    "latency_source",
    "why_not",
    "source",
)


def write_validation(validation, folder: Path) -> None:
    """validation.csv and validation.json of an api.Validation."""
    write_csv(folder / "validation.csv", validation.rows, COLUMNS)
    write_json(
        folder / "validation.json",
        {
            "what": "real closed-loop runs replayed in simulation; errors are simulated / measured - 1",
            "clients": {
                "aiperf": ClosedLoop.aiperf(8).words + " (shown at 8 users)",
                "inferencemax": ClosedLoop.inferencemax(8).words + " (shown at 8 users)",
            },
            "host_time": "on" if validation.host_time else "off",
            "dataset_entries": validation.dataset_entries,
            "skipped": validation.skipped,
            "not_simulated": sum(1 for r in validation.rows if r["why_not"]),
            "groups": validation.groups,
            "rows": validation.rows,
        },
    )


def plot_validation(rows: list[dict], path: Path) -> Path:
    """Simulated against measured mean TTFT and TPOT, log-log, with y = x and a 20% band; filled
    points are runs the host time was fitted on."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 5))
    for axis, metric in zip(axes, ("ttft", "tpot")):
        values = [v for r in rows for v in (r[f"measured_{metric}_ms"], r[f"simulated_{metric}_ms"]) if v]
        low, high = (min(values) / 1.5, max(values) * 1.5) if values else (0.1, 1.0)
        for index, engine in enumerate(sorted({r["engine"] for r in rows})):
            for fitted in (True, False):
                points = [
                    (r[f"measured_{metric}_ms"], r[f"simulated_{metric}_ms"])
                    for r in rows
                    if r["engine"] == engine and r["fitted_on"] == fitted and r[f"simulated_{metric}_ms"] is not None
                ]
                if points:
                    x, y = zip(*points)
                    colour = f"C{index}"
                    axis.scatter(
                        x,
                        y,
                        s=12,
                        alpha=0.7,
                        label=f"{engine}, {'fitted on' if fitted else 'not fitted on'}",
                        facecolors=colour if fitted else "none",
                        edgecolors=colour,
                    )
        axis.plot([low, high], [low, high], color="black", linewidth=0.8, label="y = x")
        axis.fill_between(
            [low, high], [low * 0.8, high * 0.8], [low * 1.2, high * 1.2], color="grey", alpha=0.15, label="within 20%"
        )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlim(low, high)
        axis.set_ylim(low, high)
        axis.set_xlabel(f"measured mean {metric.upper()} (ms)")
        axis.set_ylabel(f"simulated mean {metric.upper()} (ms)")
        axis.legend(fontsize=7)
    figure.suptitle("capsim against real closed-loop runs (silicon sample)")
    figure.tight_layout()
    return save_figure(figure, path, plt)
