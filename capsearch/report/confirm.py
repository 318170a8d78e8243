"""The confirmation's outputs: a table on the console, confirm.json, and confirm.png."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from rich import box
from rich.table import Table

from capsim.capsearch.capacity.confirm import Confirmation
from capsim.common.files import strict_dumps, write_atomically


def confirmation_tables(c: Confirmation) -> list[Table]:
    capacity = Table(
        title=f"capacity, {c.slo_name}; errors: simulated against measured, predicted / measured - 1",
        box=box.SIMPLE_HEAD,
    )
    for column in ("predicted from", "predicted QPS", "measured QPS", "error", "real bracket", "real trials"):
        capacity.add_column(column, justify="left" if column == "predicted from" else "right")
    high = f"{c.failing_qps:.3g}" if c.failing_qps is not None else "not found"
    measured = f"{c.measured_qps:.3g}" if c.measured_qps is not None else "none passed"
    low = f"{c.measured_qps:.3g}" if c.measured_qps is not None else "not found"
    capacity.add_row(
        "the profile",
        f"{c.predicted_qps:.3g}",
        measured,
        error_words(c.capacity_error, c.failing_qps),
        f"[{low}, {high})",
        ", ".join(f"{t['qps']:.3g} {'pass' if t['passed'] else 'fail'}" for t in c.trials),
    )
    captions = [f"predicted: {c.predicted_outcome}"]
    if c.engine_speed:  # the same prediction at the step times the engine ran at (confirm.at_engine_speed)
        speed = c.engine_speed
        again = f"{speed['predicted_qps']:.3g}" if speed["predicted_qps"] else "none passes"
        capacity.add_row(
            f"the engine's step times ({speed['step_time_ratio'] - 1:+.1%})",
            again,
            measured,
            error_words(c.capacity_error_at_engine_speed, c.failing_qps),
            "",
            "",
        )
        captions.append(
            f"the engine's {speed['batches']:,} batches took {speed['step_time_ratio'] - 1:+.1%} against what the "
            f"profile "
            f"predicts for them; at that speed: {speed['outcome']}"
        )
    capacity.caption = "\n".join(captions)
    latency = Table(title=f"latency percentiles at {c.compared_at_qps:.3g} QPS", box=box.SIMPLE_HEAD)
    for column in ("metric", "percentile", "predicted (s)", "measured (s)", "error"):
        latency.add_column(column, justify="left" if column == "metric" else "right")
    for row in c.percentiles:
        latency.add_row(
            row["metric"].upper(),
            f"P{row['percentile']}",
            f"{row['predicted_s']:.4f}",
            f"{row['measured_s']:.4f}",
            f"{row['error']:+.1%}" if math.isfinite(row["error"]) else "n/a",
        )
    return [capacity, latency]


def error_words(capacity_error: float | None, failing_qps: float | None) -> str:
    """The capacity error; a bound where no real trial failed: the real capacity is then at least
    the measured one, so the error is at most the one shown."""
    if capacity_error is None:
        return "n/a"
    return ("<= " if failing_qps is None else "") + f"{capacity_error:+.1%}"


def write_confirmation(c: Confirmation, folder: Path) -> Path:
    data = asdict(c) | {
        "capacity_error": c.capacity_error,
        "capacity_error_at_engine_speed": c.capacity_error_at_engine_speed,
    }
    text = strict_dumps(data, indent=1)
    path = folder / "confirm.json"
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))
    return path


def plot_confirmation(c: Confirmation, path: Path) -> Path:
    """Left: every real trial on the QPS axis (pass/fail) against the predicted capacity. Right:
    TTFT and TBT percentiles, predicted and measured, at the measured point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for trial in c.trials:
        left.scatter(
            trial["qps"],
            0,
            marker="o" if trial["passed"] else "x",
            s=60,
            color="tab:green" if trial["passed"] else "tab:red",
        )
    left.axvline(c.predicted_qps, color="tab:blue", linestyle="--", label=f"predicted {c.predicted_qps:.3g}")
    if c.measured_qps:
        left.axvline(c.measured_qps, color="tab:green", label=f"measured {c.measured_qps:.3g}")
    left.set_yticks([])
    left.set_xlabel("QPS (o pass, x fail)")
    left.set_title("capacity", fontsize=9)
    left.legend(fontsize=7)
    labels = [f"{r['metric'].upper()} P{r['percentile']}" for r in c.percentiles]
    x = range(len(labels))
    predicted = [r["predicted_s"] for r in c.percentiles]
    measured = [r["measured_s"] for r in c.percentiles]
    shown = lambda values: [v if v is not None and math.isfinite(v) else 0.0 for v in values]  # noqa: E731
    right.bar([i - 0.2 for i in x], shown(predicted), 0.4, label="predicted")
    right.bar([i + 0.2 for i in x], shown(measured), 0.4, label="measured")
    right.set_xticks(list(x))
    right.set_xticklabels(labels, fontsize=7, rotation=20)
    if all(v is not None and math.isfinite(v) and v > 0 for v in predicted + measured):
        right.set_yscale("log")
    elif labels:  # a metric with nothing measured (no request got a token): a linear axis shows it as 0
        right.text(0.5, 0.9, "0: nothing measured", transform=right.transAxes, ha="center", fontsize=7)
    right.set_ylabel("seconds")
    right.set_title(f"at {c.compared_at_qps:.3g} QPS", fontsize=9)
    right.legend(fontsize=7)
    fig.suptitle(f"{c.system.get('model')} {c.system.get('scheduler')}: {c.slo_name}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path
