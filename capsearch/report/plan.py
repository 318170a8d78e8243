"""The planner's plots: cost against capacity with the Pareto front, and one replica's capacity
for every configuration searched."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from capsim.capsearch.plan.planner import Candidate, Goal
from capsim.capsearch.report.figures import pyplot, save_figure
from capsim.capsearch.report.results_dir import write_csv, write_json
from capsim.sim.system import moe_layout_words


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other beats on both cost (lower) and capacity (higher), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -1.0
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(pool, goal, path: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.2))
    done = [c for c in pool if c.capacity and c.cost_per_hour and c.status != "trial too short"]
    unjudged = [c for c in pool if c.capacity and c.cost_per_hour and c.status == "trial too short"]
    kinds = sorted({c.system.hardware for c in done})
    for kind, marker in zip(kinds, "osD^v<>p"):
        mine = [c for c in done if c.system.hardware == kind]
        ax.scatter([c.cost_per_hour for c in mine], [c.capacity for c in mine], marker=marker, alpha=0.6, label=kind)
    if unjudged:  # a bound from trials too short to load them: shown, never on the front
        ax.scatter(
            [c.cost_per_hour for c in unjudged],
            [c.capacity for c in unjudged],
            marker="o",
            facecolors="none",
            edgecolors="grey",
            label="trial too short (a bound)",
        )
    points = [(c.cost_per_hour, c.capacity) for c in done]
    front = [done[i] for i in pareto_front(points)]
    ax.plot(
        [c.cost_per_hour for c in front], [c.capacity for c in front], color="black", linewidth=1, label="Pareto front"
    )
    for c in front:
        ax.annotate(
            f"{c.replicas}x {c.system.hardware} TP{c.system.tp}{moe_layout_words(c.system.to_dict())} "
            f"{c.system.scheduler}",
            (c.cost_per_hour, c.capacity),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    best = [c for c in pool if c.status == "recommended"]
    if best:
        ax.scatter(
            [best[0].cost_per_hour], [best[0].capacity], s=160, facecolors="none", edgecolors="red", label="recommended"
        )
    if goal.kind == "target_qps":
        ax.axhline(goal.value, color="red", linewidth=0.8, linestyle="--", label=f"target {goal.value:g} QPS")
    ax.set_xlabel("dollars an hour (replicas x GPUs x price)")
    ax.set_ylabel("capacity (QPS under the SLO)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.92)
    return save_figure(fig, path, plt)


def plot_capacity(pool, path: Path, title: str, top: int = 30) -> Path:
    plt = pyplot()
    searched = sorted(
        (c for c in pool if c.capacity_per_replica), key=lambda c: -(c.capacity_per_replica / c.gpus_per_replica)
    )[:top]
    fig, ax = plt.subplots(figsize=(8, 0.25 * max(len(searched), 4) + 1.2))
    labels = [c.label() for c in searched]
    bars = ax.barh(
        range(len(searched)), [c.capacity_per_replica / c.gpus_per_replica for c in searched], color="tab:blue"
    )
    for bar, candidate in zip(bars, searched):
        if not candidate.converged:  # hatched: a bound (a trial too short, a search cut), not a capacity
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    ax.set_yticks(
        range(len(searched)),
        [label + ("" if c.converged else " (not converged)") for label, c in zip(labels, searched)],
        fontsize=6,
    )
    ax.invert_yaxis()
    ax.set_xlabel("QPS a GPU (one replica's capacity / its GPUs)")
    ax.set_title(title + f" (best {len(searched)})", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.subplots_adjust(left=0.42, right=0.97, bottom=0.1, top=0.94)
    return save_figure(fig, path, plt)


def plan_table(ranked: list, goal) -> Table:
    """The recommended deployment and the runners-up, as `capsim plan` prints them."""
    table = Table(title=goal.words())
    for column in (
        "",
        "deployment",
        "replicas",
        "GPUs",
        "$/h",
        "capacity QPS",
        "$/M output tokens",
        "fails first above it",
        "latencies",
    ):
        table.add_column(
            column,
            justify="right" if column in ("replicas", "GPUs", "$/h", "capacity QPS", "$/M output tokens") else "left",
        )
    for c in ranked:
        served = goal.value if goal.kind == "target_qps" else c.capacity
        table.add_row(
            "*" if c.status == "recommended" else "",
            c.label(),
            str(c.replicas),
            str(c.gpus),
            f"{c.cost_per_hour:.2f}",
            f"{c.capacity:.3g}" + ("" if c.converged else " (not converged)"),
            f"{c.usd_per_million_output_tokens(served):.3f}",
            c.binding_clause,
            c.latency_source,
        )
    return table


CSV_COLUMNS = (
    "status",
    "hardware",
    "tp",
    "pp",
    "dp_attention",
    "ep",
    "quant",
    "engine",
    "scheduler",
    "chunk_size",
    "max_batch_size",
    "gpus_per_replica",
    "usd_per_gpu_hour",
    "upper_bound_qps",
    "capacity_per_replica",
    "replicas",
    "gpus",
    "usd_per_hour",
    "capacity_qps",
    "capacity_checked",
    "usd_per_million_output_tokens",
    "binding_clause",
    "converged",
    "latency_source",
    "trials",
    "ranked_on",
    "why",
)


def candidate_row(c: Candidate, goal: Goal) -> dict:
    served = goal.value if goal.kind == "target_qps" else c.capacity
    return {
        "status": c.status,
        "hardware": c.system.hardware,
        "tp": c.system.tp,
        "pp": c.system.pp,
        "dp_attention": c.system.dp_attention,
        "ep": c.system.ep,
        "quant": c.system.quant,
        "engine": c.system.engine,
        "scheduler": c.system.scheduler,
        "chunk_size": c.system.token_budget,
        "max_batch_size": c.system.max_batch_size,
        "gpus_per_replica": c.gpus_per_replica,
        "usd_per_gpu_hour": c.price,
        "upper_bound_qps": c.upper_bound_qps,
        "capacity_per_replica": c.capacity_per_replica,
        "replicas": c.replicas,
        "gpus": c.gpus,
        "usd_per_hour": c.cost_per_hour,
        "capacity_qps": c.capacity,
        "capacity_checked": c.capacity_checked,
        "usd_per_million_output_tokens": c.usd_per_million_output_tokens(served),
        "binding_clause": c.binding_clause,
        "converged": c.converged,
        "latency_source": c.latency_source,
        "trials": sum(len(search.trials) for search in c.searches),
        "ranked_on": ranked_on(c),
        "why": c.why,
    }


def write_rows(rows: list[dict], folder: Path, info: dict) -> None:
    write_json(folder / "plan.json", {"info": info, "candidates": rows})
    write_csv(folder / "plan.csv", rows, CSV_COLUMNS)


def ranked_on(c: Candidate) -> str:
    """The searches behind a candidate's figures: replicas, trials and their requests, each."""
    words = []
    for search in c.searches:
        replicas = search.system.get("replicas", 1)
        requests = search.workload.get("num_requests")
        words.append(
            f"{replicas} replica{'s' if replicas > 1 else ''}: {len(search.trials)} trials of {requests} requests"
        )
    return "; ".join(words)
