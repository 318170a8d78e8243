"""Plots of a load sweep: each figure against load, and the CDFs of the latencies.

Load is the request throughput achieved (completed requests per second): it places open loops
(a QPS) and closed loops (N users) on one axis, and a measured and a simulated sweep of the same
deployment side by side (`capsim compare` draws several sweeps, one series each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capsim.capsearch.capacity.workers import kill_pool, submit_here, worker_pool
from capsim.capsearch.load.metrics import WORDS, percentile_word
from capsim.capsearch.report.figures import pyplot, save_figure

DPI = 100  # wide figures of many panels: 1,500-1,700 pixels across
CDF_METRICS = (("ttft", "TTFT"), ("itl", "TBT (ITL)"), ("tpot", "TPOT"), ("e2el", "E2E latency"))


def plot_load_curves(
    series: dict[str, list[dict]], path: Path, metrics, percentiles, goodput_ms: dict | None, title: str
) -> Path:
    """One panel a figure: throughputs, then each metric at each chosen percentile, against the
    request throughput; goodput limits drawn as horizontal lines on their metric's panel."""
    plt = pyplot()
    panels = ["throughput", *metrics]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    markers = "os^vD<>"
    throughput_ax, goodput_ax = axes.flat[0], None
    for (name, rows_of), marker in zip(series.items(), markers * 4):
        x = [r["request_throughput"] for r in rows_of]
        throughput_ax.plot(x, [r["output_throughput"] for r in rows_of], marker=marker, label=f"{name}: output tok/s")
        if rows_of and rows_of[0].get("request_goodput") is not None:
            goodput_ax = goodput_ax or throughput_ax.twinx()
            goodput_ax.plot(
                x,
                [r["request_goodput"] for r in rows_of],
                marker=marker,
                linestyle="--",
                color="tab:green",
                label=f"{name}: goodput req/s",
            )
            goodput_ax.set_ylabel("goodput (req/s), dashed")
        for ax, metric in zip(axes.flat[1:], metrics):
            for p, style in zip(percentiles, ("-", "--", ":", "-.") * 4):
                key = f"p{percentile_word(p)}_{metric}_ms"
                ax.plot(
                    x, [r[key] for r in rows_of], marker=marker, linestyle=style, label=f"{name} P{percentile_word(p)}"
                )
    axes.flat[0].set_ylabel("output tokens/s")
    axes.flat[0].set_title("throughput")
    for ax, metric in zip(axes.flat[1:], metrics):
        ax.set_title(WORDS[metric])
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        if goodput_ms and metric in goodput_ms:
            ax.axhline(goodput_ms[metric], color="red", linewidth=1, label=f"limit {goodput_ms[metric]:g} ms")
    for ax in axes.flat[: len(panels)]:
        ax.set_xlabel("request throughput (req/s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(
        left=0.06, right=0.95, bottom=0.08, top=0.9, wspace=0.35, hspace=0.35
    )  # tight_layout: a second draw
    return save_figure(fig, path, plt, dpi=DPI)


def plot_cdfs(cdfs: dict[str, dict], path: Path, goodput_ms: dict | None, title: str) -> Path:
    """The CDF of TTFT, TBT, TPOT and E2E latency (completed requests), one curve a load:
    `cdfs[load][metric]` are the latency's quantiles in ms at evenly spaced fractions."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(CDF_METRICS), figsize=(4.2 * len(CDF_METRICS), 3.4), squeeze=False)
    for label, points in cdfs.items():
        for ax, (metric, _) in zip(axes.flat, CDF_METRICS):
            if metric in points:
                ax.plot(points[metric], np.linspace(0, 1, len(points[metric])), label=label)
    for ax, (metric, words) in zip(axes.flat, CDF_METRICS):
        ax.set_title(words)
        ax.set_xlabel("ms")
        ax.set_xscale("log")
        ax.set_ylabel("fraction")
        ax.grid(alpha=0.3)
        if goodput_ms and metric in goodput_ms:
            ax.axvline(goodput_ms[metric], color="red", linewidth=1)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.15, top=0.82, wspace=0.3)
    return save_figure(fig, path, plt, dpi=DPI)


def load_matplotlib() -> None:
    pyplot()  # matplotlib imported, while the trials run


def draw_sweep(series, rows, cdfs, folder: Path, metrics, percentiles, goodput_ms, title) -> None:
    plot_load_curves({series: rows}, folder / "load_curves.png", metrics, percentiles, goodput_ms, title)
    plot_cdfs(cdfs, folder / "cdf.png", goodput_ms, title)


class SweepPlotter:
    """Draws a sweep's two figures in a worker process: it starts (imports included) while the
    trials run, and draws while the main process writes the loads' files. Use as a context
    manager: the worker never outlives the command (workers.worker_pool)."""

    def __enter__(self):
        self.pool = worker_pool(1)
        submit_here(self.pool, load_matplotlib)
        self.drawing = None
        return self

    def draw(self, series, rows, cdfs, folder: Path, metrics, percentiles, goodput_ms, title) -> None:
        self.drawing = submit_here(
            self.pool, draw_sweep, series, rows, cdfs, folder, metrics, percentiles, goodput_ms, title
        )

    def wait(self) -> None:
        if self.drawing is not None:
            self.drawing.result()

    def __exit__(self, kind, error, trace):
        if kind is None:
            self.pool.shutdown(wait=True)
        else:
            kill_pool(self.pool)
        return False
