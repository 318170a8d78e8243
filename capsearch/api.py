"""capsim's Python API: what every `capsim` command runs, callable from a notebook or a script.

    import capsim
    system = capsim.SystemSpec(model="Llama-3.1-8B", hardware="H100", scheduler="sarathi")
    workload = capsim.WorkloadSpec("chat", num_requests=512)
    found = capsim.search(system, workload, capsim.TbtTtft(tbt=0.1, ttft=2.0))
    found.table()        # pyarrow: the rows of capacity.csv
    found.write("out/")  # capacity.csv, capacity.json, capacity.png, as `capsim search` writes them

simulate (one load), search (capacity for each SLO), sweep (capacity against one SLO parameter),
plan (the cheapest deployment) and validate (simulated against real runs) each return a typed
result with the content of the command's files: `table()` gives its CSV as a pyarrow table,
`write(folder)` writes the files as a set. The CLI parses flags into these arguments and prints.
Bad arguments raise the same errors the CLI shows as one line (ConfigError, SLOError,
SimulationError, ProfileError, TraceError: all ValueError).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from capsim.capsearch.capacity.jobs import EXECUTORS, JobRunner, SearchJob, run_jobs
from capsim.capsearch.capacity.search import Capacity
from capsim.capsearch.capacity.slo import SLO_KINDS, Deadline, Goodput, TbtTtft, TtftTpot
from capsim.capsearch.capacity.trials import TrialLimits
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.experiments.conventions import MAX_TRIALS
from capsim.capsearch.load.validate import GROUP_KEYS, Replay, replay_all, summary
from capsim.capsearch.plan.disagg import Split, search_splits, splits
from capsim.capsearch.plan.planner import (
    DEFAULT_BATCHES,
    DEFAULT_BUDGETS,
    DEFAULT_TPS,
    MOE_LAYOUTS,
    VLLM_SCHEDULERS,
    Candidate,
    Goal,
    candidates,
    found_score,
    read_prices,
)
from capsim.capsearch.plan.planner import plan as plan_candidates
from capsim.capsearch.report.capacity import (
    CSV_COLUMNS,
    capacity_rows,
    plot_capacity_bars,
    plot_sensitivity,
    write_capacity_table,
)
from capsim.capsearch.report.plan import candidate_row, plot_capacity, plot_pareto, write_rows
from capsim.capsearch.report.results_dir import ResultSet
from capsim.capsearch.report.validation import COLUMNS as VALIDATION_COLUMNS
from capsim.capsearch.report.validation import plot_validation, write_validation
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.host_time import training_rows
from capsim.profiles.measurements import read_silicon_sample
from capsim.profiles.store import ENGINES
from capsim.real.launch import Launch, kubernetes_manifests, launch, manifest_text
from capsim.sim import POLICIES, DisaggSpec, RunResult, SystemSpec
from capsim.sim import simulate as replay
from capsim.sim.policies import ENGINE_SCHEDULERS
from capsim.sim.system import QUANTS
from capsim.traces import WorkloadSpec

__all__ = [
    "Capacities",
    "Deadline",
    "DisaggSpec",
    "Goodput",
    "PlanResult",
    "RunResult",
    "SystemSpec",
    "TbtTtft",
    "TtftTpot",
    "Validation",
    "WorkloadSpec",
    "plan",
    "search",
    "search_jobs",
    "simulate",
    "sweep",
    "validate",
]


def _table(rows: list[dict], columns) -> pa.Table:
    """Rows as a pyarrow table with the CSV's columns, in its order."""
    return pa.table({column: [row.get(column) for row in rows] for column in columns})


# --- one load ---------------------------------------------------------------------------------


def simulate(
    system: SystemSpec | DisaggSpec,
    workload: WorkloadSpec,
    qps: float | None = None,
    concurrency: int | None = None,
    time_limit_s: float | None = None,
) -> RunResult:
    """The workload replayed on the system at `qps` (the workload's arrival process), or as a
    closed loop of `concurrency` users (both: a rate with at most that many in flight, as `vllm
    bench serve --max-concurrency`). The result has every request's token times (`.requests`,
    pyarrow), every batch (`.batches`) and `.summary()`; `.write(folder)` writes
    requests.parquet, batches.parquet and summary.json."""
    if qps is None and concurrency is None:
        raise ConfigError("give the load: qps (requests a second) or concurrency (users of a closed loop)")
    if qps is not None and not qps > 0:
        raise ConfigError(f"qps must be positive, got {qps}")
    workload = workload.at_qps(math.inf if qps is None else qps)
    return replay(system, workload, time_limit_s=time_limit_s, max_concurrency=concurrency)


# --- capacity ---------------------------------------------------------------------------------


@dataclass
class Capacities:
    """Capacity searches' results, one a (system, workload, SLO): `capsim search`'s capacity.csv."""

    capacities: list[Capacity]

    def __iter__(self):
        return iter(self.capacities)

    def __len__(self) -> int:
        return len(self.capacities)

    def __getitem__(self, index: int) -> Capacity:
        return self.capacities[index]

    def table(self) -> pa.Table:
        """capacity.csv's rows: what was searched, what was found, whether it converged."""
        return _table(capacity_rows(self.capacities), CSV_COLUMNS)

    def write(self, folder: str | Path, stem: str = "capacity", sweep_parameter: str | None = None) -> Path:
        """<stem>.csv, <stem>.json and <stem>.png (a sweep's plot against its parameter), as a set."""
        with ResultSet(Path(folder)) as staging:
            write_capacity_table(self.capacities, staging, stem=stem)
            if sweep_parameter:
                plot_sensitivity(self.capacities, sweep_parameter, staging / f"{stem}.png")
            else:
                plot_capacity_bars(self.capacities, staging / f"{stem}.png")
        return Path(folder)


def check_feasible(jobs: list[SearchJob]) -> None:
    """Refuse searches no QPS can pass: requests longer than the model holds (they would all be
    rejected, hence violations), or a TBT limit below one decode step of the system alone."""
    for job in jobs:
        job.system.scheduler_config()  # first of all: the model must fit the GPUs
        job.system.latency_model()  # and its latencies must resolve (a profile of this model, GPU and TP)
        requests = job.workload.requests()
        too_long = int((requests.prompt_tokens + requests.output_tokens > job.system.model_len).sum())
        if too_long:
            raise ConfigError(
                f"{too_long} of {len(requests)} requests of {job.workload.trace} are longer than the max model length "
                f"{job.system.model_len} of {job.system.model}, so they could never finish: cap them with "
                f"--max-total-tokens {job.system.model_len}, or raise --max-model-len"
            )
        unschedulable = job.system.unschedulable(requests.prompt_tokens) if isinstance(job.system, SystemSpec) else None
        if unschedulable:
            raise ConfigError(f"{job.system.model} {job.system.scheduler} on {job.workload.trace}: {unschedulable}")
        predictor = job.system.latency_model().predictor
        one_step = predictor(1, 0, 0, 0, 1, 1)
        for slo in job.slos:
            if slo.tbt_limit is not None and slo.tbt_limit < one_step:
                raise ConfigError(
                    f"TBT limit {slo.tbt_limit:g} s is below one decode step of {job.system.model} on "
                    f"{job.system.hardware} TP{job.system.tp} alone ({one_step * 1e3:.1f} ms): no QPS can meet it"
                )


def search_jobs(
    jobs: list[SearchJob],
    executor: str = "process",
    workers: int | None = None,
    cache_dir: str | None = None,
    ray_address: str | None = None,
    on_done=None,
) -> Capacities:
    """Run capacity searches (a local process pool, Ray, or this process), each job searching
    every SLO it has; `on_done(job)` as each finishes. Trials are cached by content in
    `cache_dir` (default: capsim's cache folder), so another SLO or a rerun reuses them."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    check_feasible(jobs)
    return Capacities(
        run_jobs(
            jobs, executor=executor, workers=workers, ray_address=ray_address, cache_dir=cache_dir, on_done=on_done
        )
    )


def search_job(
    system: SystemSpec | DisaggSpec,
    workload: WorkloadSpec,
    slos,
    start_qps: float = 1.0,
    granularity: float = 0.025,
    max_trials: int = 20,
    early_stop: bool = True,
    time_limit_s: float | None = None,
    screen: bool = True,
) -> SearchJob:
    """One search's job, its arguments checked."""
    slos = (slos,) if isinstance(slos, tuple(SLO_KINDS.values())) else tuple(slos)
    if not slos or not all(isinstance(s, tuple(SLO_KINDS.values())) for s in slos):
        raise ConfigError("slos: give one SLO or a list of them (TbtTtft, TtftTpot, Deadline, Goodput)")
    if not (start_qps > 0 and math.isfinite(start_qps)):
        raise ConfigError(f"start_qps must be a positive number, got {start_qps}")
    if not 0 < granularity < 1:
        raise ConfigError(f"granularity must be a fraction in (0, 1), got {granularity}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or not 1 <= max_trials <= MAX_TRIALS:
        raise ConfigError(f"max_trials must be a whole number from 1 to {MAX_TRIALS}, got {max_trials!r}")
    if time_limit_s is not None and not 0 < time_limit_s < math.inf:
        raise ConfigError(f"time limit must be positive seconds, got {time_limit_s}")
    limits = TrialLimits() if time_limit_s is None else TrialLimits(time_limit_s=time_limit_s, completed_only=True)
    labels = (
        ("model", system.model),
        ("scheduler", system.scheduler),
        ("trace", workload.trace),
        ("parallel", system.parallel_label),
    )
    return SearchJob(
        system, workload, slos, start_qps, labels, granularity, max_trials, early_stop, limits, screen=screen
    )


def search(
    system: SystemSpec | DisaggSpec,
    workload: WorkloadSpec,
    slos,
    start_qps: float = 1.0,
    granularity: float = 0.025,
    max_trials: int = 20,
    early_stop: bool = True,
    time_limit_s: float | None = None,
    screen: bool = True,
    executor: str = "process",
    workers: int | None = None,
    cache_dir: str | None = None,
) -> Capacities:
    """The capacity of the system on the workload under each SLO: the highest QPS that passes,
    the lowest that fails, every trial, the clause that failed first and whether it converged
    (`capsim search` for one system). `time_limit_s` cuts each trial and scores its finished
    requests only, as Sarathi-Serve does. `screen` steers each search with short trials first
    (SearchJob.screen); the capacity and its bracket are full trials either way."""
    job = search_job(system, workload, slos, start_qps, granularity, max_trials, early_stop, time_limit_s, screen)
    return search_jobs([job], executor=executor, workers=workers, cache_dir=cache_dir)


def sweep(
    system: SystemSpec | DisaggSpec,
    workload: WorkloadSpec,
    slo,
    parameter: str,
    values,
    **search_options,
) -> Capacities:
    """Capacity against one SLO parameter (`capsim sweep`): one search a value of
    `slo.<parameter>`; the searches share trials through the cache."""
    values = sorted({float(v) for v in values})
    if not values:
        raise ConfigError("values is empty: give the values of the SLO parameter to sweep")
    if not dataclasses.is_dataclass(slo) or parameter not in {f.name for f in dataclasses.fields(slo)}:
        raise ConfigError(f"a {getattr(slo, 'kind', type(slo).__name__)} SLO has no {parameter!r}")
    slos = [dataclasses.replace(slo, **{parameter: v}) for v in values]
    executor = search_options.pop("executor", "process")
    workers, cache_dir = search_options.pop("workers", None), search_options.pop("cache_dir", None)
    jobs = [search_job(system, workload, s, **search_options) for s in slos]
    return search_jobs(jobs, executor=executor, workers=workers, cache_dir=cache_dir)


# --- plans ------------------------------------------------------------------------------------


@dataclass
class PlanSpace:
    """The candidates a plan searches, every choice checked: GPU kinds with a price x TP x PP x
    engine x scheduler x token budget x batch limit (x MoE layout x quantization)."""

    base: SystemSpec
    kinds: list[str]
    prices: dict[str, float]
    tps: list[int]
    pps: list[int]
    by_engine: dict[str, list[str]]
    budgets: dict[str, tuple]
    batches: list[int]
    layouts: list[str]
    quants: list[str]
    pool: list[Candidate] | None = None

    @property
    def engines(self) -> list[str]:
        return list(self.by_engine)

    @property
    def schedulers(self) -> list[str]:
        return list(dict.fromkeys(s for names in self.by_engine.values() for s in names))

    def candidates(self) -> list[Candidate]:
        """The candidates, made once: a plan of this space updates their status as it goes."""
        if self.pool is None:
            self.pool = self._make()
        return self.pool

    def _make(self) -> list[Candidate]:
        return candidates(
            self.base.model,
            self.kinds,
            self.prices,
            self.tps,
            self.pps,
            self.by_engine,
            self.budgets,
            self.batches,
            self.base,
            self.layouts,
            self.quants,
        )


def plan_goal(target_qps=None, gpus=None, budget=None, disagg: bool = False) -> Goal:
    """What to plan for: exactly one of a target load, a GPU count, a budget."""
    for name, value in (("--target-qps", target_qps), ("--budget", budget)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a finite positive number, got {value}")
    goals = [
        Goal(kind, value)
        for kind, value in (("target_qps", target_qps), ("gpus", gpus), ("budget", budget))
        if value is not None
    ]
    if len(goals) != 1:
        raise ConfigError("say what to plan for: one of --target-qps, --gpus, --budget")
    if disagg and goals[0].kind != "gpus":
        raise ConfigError(
            "--disagg compares layouts of a GPU count on a GPU kind: give --gpus N and --hardware (not --target-qps "
            "or --budget)"
        )
    return goals[0]


def _gpu(name: str) -> str:
    try:
        return get_hardware(name).name
    except ProfileError as error:
        raise ConfigError(str(error)) from None


def _positive(values, name: str) -> list[int]:
    values = list(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ConfigError(f"--{name} {','.join(map(str, values))}: whole numbers from 1")
    return values


def _moe_layouts(layouts, base: SystemSpec) -> list[str]:
    """The MoE layouts to plan over: all for a mixture of experts, tp alone for a dense model."""
    moe = base.model_spec.is_moe
    if layouts is None:
        return list(MOE_LAYOUTS) if moe else ["tp"]
    layouts = list(layouts)
    bad = [layout for layout in layouts if layout not in MOE_LAYOUTS]
    if bad:
        raise ConfigError(f"unknown --moe-layout {', '.join(bad)}; choose among {', '.join(MOE_LAYOUTS)}")
    if not moe and layouts != ["tp"]:
        raise ConfigError(
            f"{base.model} is dense: expert and attention-data parallel layouts need a mixture of experts"
        )
    return layouts


def plan_space(
    model: str,
    hardware=None,
    tp=None,
    pp=None,
    engine=None,
    scheduler=None,
    chunk_size=None,
    max_batch_size=None,
    moe_layout=None,
    quant=None,
    prices: dict[str, float] | None = None,
    router: str = "round_robin",
    host_time: bool = True,
) -> PlanSpace:
    """The plan's candidates from the choices given (None: the default for that axis)."""
    prices = read_prices(None) | (prices or {})
    kinds = [_gpu(name) for name in hardware] if hardware else list(prices)
    unpriced = [k for k in kinds if k not in prices]
    if unpriced:
        raise ConfigError(
            f"no price for {', '.join(unpriced)}: give one with --prices (a YAML of `hardware: dollars per GPU-hour`)"
        )
    engines = list(engine) if engine else ["vllm"]
    # Without a scheduler each engine brings its own batching: SGLang's and TRT-LLM's, or vLLM's three.
    by_engine = {
        e: list(scheduler) if scheduler else [ENGINE_SCHEDULERS[e]] if e in ENGINE_SCHEDULERS else list(VLLM_SCHEDULERS)
        for e in engines
    }
    schedulers = list(dict.fromkeys(s for names in by_engine.values() for s in names))
    for names, allowed, what in ((engines, ENGINES, "engine"), (schedulers, list(POLICIES), "scheduler")):
        bad = [n for n in names if n not in allowed]
        if bad:
            raise ConfigError(f"unknown {what} {', '.join(bad)}; choose among {', '.join(allowed)}")
    chunks = tuple(_positive(chunk_size, "chunk-size")) if chunk_size else None
    budgets = {
        s: (chunks if POLICIES[s].default_budget is not None else (None,))
        if chunks
        else DEFAULT_BUDGETS.get(s, (None,))
        for s in schedulers
    }
    base = SystemSpec(model=model, router=router, host_time=host_time)
    quants = list(quant) if quant else ["auto"]
    bad = [q for q in quants if q not in QUANTS]
    if bad:
        raise ConfigError(f"unknown --quant {', '.join(bad)}; choose among {', '.join(QUANTS)}")
    return PlanSpace(
        base,
        kinds,
        prices,
        _positive(tp, "tp") if tp else list(DEFAULT_TPS),
        _positive(pp, "pp") if pp else [1],
        by_engine,
        budgets,
        _positive(max_batch_size, "max-batch-size") if max_batch_size else list(DEFAULT_BATCHES),
        _moe_layouts(moe_layout, base),
        quants,
    )


@dataclass
class PlanResult:
    """A plan (`capsim plan`): every candidate with its status, capacity and cost; the
    recommended deployment first among `ranked`; the disaggregated splits where asked for."""

    goal: Goal
    model: str
    workload: WorkloadSpec
    slo: object
    candidates: list[Candidate]
    splits: list[Split] = field(default_factory=list)
    gpus: int | None = None

    @property
    def ranked(self) -> list[Candidate]:
        chosen = [c for c in self.candidates if c.status in ("recommended", "runner-up")]
        return sorted(chosen, key=lambda c: (c.status != "recommended", found_score(self.goal, c)))

    @property
    def recommended(self) -> Candidate | None:
        return next((c for c in self.candidates if c.status == "recommended"), None)

    def rows(self) -> list[dict]:
        return [candidate_row(c, self.goal) for c in self.candidates]

    def launch(self) -> tuple[Launch | None, str]:
        """How to run the recommended deployment: (one replica's launch on its engine, why not
        when there is none)."""
        best = self.recommended
        if best is None:
            return None, "no candidate meets the SLO at this goal"
        try:
            return launch(best.system), ""
        except ProfileError as error:
            return None, str(error)

    def manifests(self) -> list[dict]:
        """A Kubernetes Deployment (all the recommended replicas) and Service for it; [] without a launch."""
        best = self.recommended
        if best is None or self.launch()[0] is None:
            return []
        return kubernetes_manifests(dataclasses.replace(best.system, replicas=best.replicas or 1))

    def table(self) -> pa.Table:
        """plan.csv's rows: every candidate, why it was cut or what it reached."""
        from capsim.capsearch.report.plan import CSV_COLUMNS as PLAN_COLUMNS

        return _table(self.rows(), PLAN_COLUMNS)

    def write(self, folder: str | Path) -> list[str]:
        """plan.csv, plan.json, pareto.png, capacity.png (and disagg.csv/json/png), as a set;
        the names written."""
        title = f"{self.model}, {self.workload.trace}"
        names = ["plan.csv", "plan.json", "pareto.png", "capacity.png"]
        with ResultSet(Path(folder)) as staging:
            info = {
                "goal": dataclasses.asdict(self.goal),
                "model": self.model,
                "workload": self.workload.to_dict(),
                "slo": self.slo.clauses,
                "candidates": len(self.candidates),
            }
            run, why = self.launch()
            info["launch"] = run.shell() if run else f"none: {why}"
            write_rows(self.rows(), staging, info)
            if run:
                (staging / "launch.sh").write_text(run.shell())
                (staging / "deployment.yaml").write_text(manifest_text(self.manifests()))
                names += ["launch.sh", "deployment.yaml"]
            plot_pareto(self.candidates, self.goal, staging / "pareto.png", f"{title}: {self.goal.words()}")
            plot_capacity(self.candidates, staging / "capacity.png", f"{title}: capacity of one replica")
            if self.splits:
                from capsim.capsearch.report.disagg import plot_splits, write_splits

                write_splits(self.splits, staging)
                plot_splits(
                    self.splits, self.candidates, staging / "disagg.png", f"{title}, {self.gpus} GPUs: capacity a GPU"
                )
                names += ["disagg.csv", "disagg.json", "disagg.png"]
        return names


def plan(
    model: str,
    workload: WorkloadSpec,
    slo,
    target_qps: float | None = None,
    gpus: int | None = None,
    budget: float | None = None,
    space: PlanSpace | None = None,
    disagg: bool = False,
    executor: str = "process",
    workers: int | None = None,
    cache_dir: str | None = None,
    ray_address: str | None = None,
    progress=None,
    **choices,
) -> PlanResult:
    """The cheapest deployment that meets `slo` at `target_qps` (or the most capacity on `gpus`
    GPUs, or for `budget` dollars an hour): `capsim plan`. `choices` limit the space as the
    flags do, each a list: hardware, tp, pp, engine, scheduler, chunk_size, max_batch_size,
    moe_layout, quant; prices ({GPU: dollars an hour}), router, host_time. `progress(item)` is
    called after each search (a Candidate, or a Split with disagg)."""
    goal = plan_goal(target_qps, gpus, budget, disagg)
    if isinstance(slo, (list, tuple)) or not isinstance(slo, tuple(SLO_KINDS.values())):
        raise ConfigError("plan meets one SLO: give one (TbtTtft, TtftTpot, Deadline, Goodput)")
    if ray_address and executor != "ray":
        raise ConfigError("--ray-address joins a Ray cluster: add --executor ray")
    if disagg and space is None and not choices.get("hardware"):
        raise ConfigError(
            "--disagg compares layouts of a GPU count on a GPU kind: give --hardware (or hardware: in --space)"
        )
    if space is not None and (choices or model != space.base.model):
        given = ", ".join(sorted(choices)) or f"model {model!r}"
        raise ConfigError(
            f"a plan takes its space or the choices that make one, not both: {given} would be ignored beside space=; "
            f"pass them to plan_space() instead"
        )
    space = space or plan_space(model, **choices)
    pool = space.candidates()
    plan_candidates(goal, pool, workload, slo, {}, workers, cache_dir, progress, executor, ray_address)
    split_pool = (
        disagg_splits(space, gpus, workload, slo, executor, workers, cache_dir, ray_address, progress) if disagg else []
    )
    return PlanResult(goal, space.base.model, workload, slo, pool, split_pool, gpus)


def split_candidates(space: PlanSpace, gpus: int) -> list[Split]:
    """The xPyD splits of `gpus` GPUs of each kind and engine (plan/disagg.py): the prefill pool
    runs sarathi with the largest chunk of the space."""
    chunk = max(space.budgets.get("sarathi") or DEFAULT_BUDGETS["sarathi"])
    return [
        split
        for kind in space.kinds
        for engine in space.engines
        for split in splits(dataclasses.replace(space.base, engine=engine), kind, gpus, space.tps, chunk, space.batches)
    ]


def disagg_splits(space: PlanSpace, gpus, workload, slo, executor, workers, cache_dir, ray_address, progress=None):
    """The xPyD splits of `gpus` GPUs, searched."""
    pool = split_candidates(space, gpus)
    runner = JobRunner(executor, workers, cache_dir, ray_address)
    try:
        search_splits(pool, workload, slo, {}, runner, progress)
    finally:
        runner.close()
    return pool


# --- validation -------------------------------------------------------------------------------


@dataclass
class Validation:
    """Real closed-loop runs replayed in simulation (`capsim validate`): one row a run, grouped
    errors (simulated / measured - 1), and the runs left out with the reason."""

    replays: list[Replay]
    rows: list[dict]
    groups: dict
    skipped: dict
    host_time: bool
    dataset_entries: int | None = None

    def table(self) -> pa.Table:
        """validation.csv's rows."""
        return _table(self.rows, VALIDATION_COLUMNS)

    def write(self, folder: str | Path) -> Path:
        """validation.csv, validation.json and validation.png, as a set."""
        with ResultSet(Path(folder)) as staging:
            write_validation(self, staging)
            plot_validation(self.rows, staging / "validation.png")
        return Path(folder)


def validation_runs(measurements=None, **wanted) -> tuple[list, dict]:
    """The real runs to replay: those of the silicon sample (or the CSV at `measurements`) capsim
    can price, filtered by engine, model, hardware, quant (each a list or None); and those
    left out, counted by reason."""
    runs, skipped = read_silicon_sample(measurements)
    if not runs:
        raise ProfileError(
            f"{measurements or 'the silicon sample'}: no run capsim can replay ("
            + "; ".join(f"{n} {reason}" for reason, n in skipped.most_common(3))
            + "): give runs of dense models on aggregated deployments, 16-bit or FP8"
        )
    for key, values in wanted.items():
        if values is None:
            continue
        values = set(values)
        known = {getattr(m, key) for m in runs}
        unknown = sorted(values - known)
        if unknown:
            raise ProfileError(
                f"--{key} {', '.join(unknown)}: no run capsim can replay has it; the runs have "
                f"{', '.join(sorted(map(str, known)))}"
            )
        runs = [m for m in runs if getattr(m, key) in values]
    return runs, dict(skipped.most_common())


def check_dataset_entries(runs: list, dataset_entries: int | None) -> None:
    if dataset_entries is not None and not any(m.client == "aiperf" for m in runs):
        raise ProfileError(
            "--dataset-entries shapes aiperf's prompts, and none of these runs was measured with aiperf: drop it"
        )


def validate(
    measurements: str | Path | None = None,
    engine=None,
    model=None,
    hardware=None,
    quant=None,
    host_time: bool = True,
    dataset_entries: int | None = None,
    limit: int | None = None,
    runs: list | None = None,
    skipped: dict | None = None,
    progress=None,
) -> Validation:
    """Replay real closed-loop runs (NVIDIA's silicon sample by default) as they were measured:
    each engine's own batching and serve defaults, kernel-database step times plus the engine's
    host time (`host_time=False` leaves it out), the client that measured them. `runs` (with
    their `skipped` counts) from validation_runs replaces the reading and filtering."""
    if runs is None:
        runs, skipped = validation_runs(measurements, engine=engine, model=model, hardware=hardware, quant=quant)
    runs = runs[:limit] if limit else runs
    check_dataset_entries(runs, dataset_entries)
    fitted = training_rows()
    replays = replay_all(runs, host_time, progress, dataset_entries)
    rows = [r.row() | {"fitted_on": r.measurement.id in fitted} for r in replays]
    groups = {
        "engine": summary(replays),
        "engine_fitted": _fitted_summary(replays, fitted),
        "engine_concurrency": summary(replays, ("engine", "concurrency_bucket")),
        "detailed": summary(replays, GROUP_KEYS),
    }
    return Validation(replays, rows, groups, skipped or {}, host_time, dataset_entries)


def _fitted_summary(replays, fitted: set[str]) -> list[dict]:
    out = []
    for label, keep in (("fitted on", True), ("not fitted on", False)):
        chosen = [r for r in replays if (r.measurement.id in fitted) == keep]
        out += [row | {"rows_set": label} for row in summary(chosen)]
    return out
