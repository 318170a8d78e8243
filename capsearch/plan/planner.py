"""The deployment planner: the cheapest deployment that meets an SLO at a target load (or the
most capacity for a GPU count or an hourly budget), from trace-driven capacity searches.

1. Candidates: every GPU kind with a price x TP x PP x engine x scheduler x token budget x batch
   limit asked for. A candidate is one replica; the deployment is R replicas of it.
2. Pruning before any trial: TP must divide the attention heads and the model must fit with room
   for a full-length sequence (else "does not fit"); an upper bound on the QPS at which one
   replica could pass a trial: the prompt and output tokens a second it could at best sustain
   (the latency model at the best batch shapes), widened by what a finite trial lets a queue
   grow before the SLO's waiting clause notices (`trial_bound`; no bound without such a clause).
3. Screening: every candidate whose bound could still beat the screened ones gets a short
   search (a quarter of the requests, a 10% bracket), in the order of its best possible cost
   (target: the fewest replicas whose bound reaches Q, x GPUs x price).
4. Branch and bound: in the order the screen gives (its capacity SCREEN_SLACK more hopeful), one
   replica of each gets a full capacity search, in a process pool (or on Ray) with the shared
   trial cache, until no candidate left could beat the RUNNERS_UP-th best found even at that. A
   candidate is ranked on full searches only. A search starts from what is known: a searched
   neighbour's capacity (another batch limit or chunk: its bracket first), else the screened
   capacity, else half the bound; it gallops from there and ends at a pass too high for its
   trials to judge. Trials of batch limits that never bound are shared (trials.sibling_trial).
5. The best few are checked as whole deployments: a capacity search of R replicas behind the
   router, as `capsim search --replicas R` runs it, started at R times one replica's capacity; R
   moves to the fewest replicas that meet the target.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from capsim.capsearch.capacity.jobs import SCREEN_GRANULARITY, JobRunner, SearchJob, screen_workload
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.experiments.conventions import MAX_REPLICAS
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.sim import SimulationError, SystemSpec
from capsim.sim.system import moe_layout_words
from capsim.traces import WorkloadSpec

RUNNERS_UP = 5  # deployments kept, the recommended one included
BOUND_SLACK = 1.05  # the bound is raised this much: the latency model's own error, so no candidate is cut by noise
MAX_REPLICA_CHECKS = 4  # rounds of whole-deployment searches that settle the replica counts
SCREEN_SLACK = 1.25  # a screened capacity is taken as at most this far off the full one, either way
DEPLOYMENT_STEP = 1.1  # a deployment's search starts at R x one replica's capacity and moves by 10% first
VLLM_SCHEDULERS = ("sarathi", "vllm_v1", "vllm_v0")  # vLLM's batching, as the papers and today's vLLM run it
DEFAULT_BUDGETS = {"sarathi": (512, 1024, 2048), "vllm_v1": (2048, 8192), "vllm_v0": (None,)}
DEFAULT_BATCHES = (64, 128, 256)
DEFAULT_TPS = (1, 2, 4, 8)
# A mixture of experts on G GPUs (G from the TP list): the experts split by matrix (tp), by expert
# (ep: EP = G, vLLM's --enable-expert-parallel), or attention data-parallel with expert parallelism
# (dp_ep: TP 1 x DP G, EP G, the wide-EP layout SGLang and TensorRT-LLM run DeepSeek with).
MOE_LAYOUTS = ("tp", "ep", "dp_ep")


def moe_layout(layout: str, gpus: int) -> dict:
    """SystemSpec fields of a MoE layout on `gpus` GPUs a replica."""
    return {"tp": dict(tp=gpus), "ep": dict(tp=gpus, ep=gpus), "dp_ep": dict(tp=1, dp_attention=gpus, ep=gpus)}[layout]


def builtin_prices() -> dict[str, dict]:
    text = resources.files("capsim.profiles").joinpath("data/gpu_prices.json").read_text()
    return json.loads(text)["prices"]


def read_prices(path: str | None) -> dict[str, float]:
    """Dollars per GPU-hour by hardware name: the shipped table, replaced entry by entry by a YAML
    file's `hardware: price` pairs."""
    prices = {name: entry["usd_per_gpu_hour"] for name, entry in builtin_prices().items()}
    if path is None:
        return prices
    from capsim.capsearch.experiments.schema import load_yaml_file

    data = load_yaml_file(Path(path))
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: write one `hardware: dollars per GPU-hour` pair a line")
    for name, price in data.items():
        try:
            hardware = get_hardware(str(name)).name
        except ProfileError as error:
            raise ConfigError(f"{path}: {error}") from None
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 < price < math.inf:
            raise ConfigError(
                f"{path}: the price of {name} must be a positive number of dollars per GPU-hour, got {price!r}"
            )
        prices[hardware] = float(price)
    return prices


@dataclass(frozen=True)
class Goal:
    kind: str  # "target_qps" | "gpus" | "budget"
    value: float

    def words(self) -> str:
        return {
            "target_qps": f"the cheapest deployment that meets the SLO at {self.value:g} QPS",
            "gpus": f"the most capacity on at most {self.value:g} GPUs",
            "budget": f"the most capacity for at most ${self.value:g} an hour",
        }[self.kind]


@dataclass(eq=False)  # one object a candidate: kept in dicts by identity
class Candidate:
    system: SystemSpec  # one replica
    price: float  # dollars per GPU-hour
    status: str = "candidate"  # does not fit | no latency model | cut by the bound | searched | recommended | runner-up
    why: str = ""
    upper_bound_qps: float | None = None  # the most QPS one replica could pass a trial at (trial_bound)
    sustained_qps: float | None = None  # the most it could sustain (upper_bound_qps before the trial's allowance)
    slo: object = None
    num_requests: int = 0
    latency_source: str = ""
    capacity_per_replica: float | None = None
    converged: bool = False
    binding_clause: str = ""
    replicas: int | None = None
    capacity: float | None = (
        None  # of the whole deployment: searched with its replicas where checked, else R x one replica's
    )
    capacity_checked: bool = False
    screened_qps: float | None = None  # one replica's capacity on the screen's short trials, where it decided
    output_tokens_per_request: float = 0.0
    searches: list = field(default_factory=list)

    @property
    def gpus_per_replica(self) -> int:
        return self.system.gpus_per_replica

    @property
    def gpus(self) -> int | None:
        return self.replicas * self.gpus_per_replica if self.replicas else None

    @property
    def cost_per_hour(self) -> float | None:
        return self.gpus * self.price if self.replicas else None

    def usd_per_million_output_tokens(self, qps: float | None) -> float | None:
        """At the load served: the target, or the capacity when maximizing."""
        if not self.replicas or not qps:
            return None
        return self.cost_per_hour / (qps * self.output_tokens_per_request * 3600) * 1e6

    def label(self) -> str:
        s = self.system
        budget = f" chunk {s.token_budget}" if s.token_budget else ""
        quant = f" {s.quant}" if s.quant != "auto" else ""
        layout = moe_layout_words(s.to_dict())
        return (
            f"{s.hardware} TP{s.tp} PP{s.pp}{layout}{quant} {s.engine} {s.scheduler}{budget} batch {s.max_batch_size}"
        )


def candidates(
    model: str,
    hardware: list[str],
    prices: dict[str, float],
    tps,
    pps,
    schedulers: dict[str, list[str]],
    budgets: dict,
    batches,
    base: SystemSpec,
    layouts=("tp",),
    quants=("auto",),
) -> list[Candidate]:
    """Every combination asked for (`schedulers`: engine -> its schedulers; `layouts`: MOE_LAYOUTS
    over each TP size's GPUs), as one-replica systems (the base system gives the rest)."""
    found = []
    for name in hardware:
        for gpus in tps:
            layouts_here = [layout for layout in layouts if layout == "tp" or gpus > 1]  # on 1 GPU all are one
            for layout, pp, quant in itertools.product(layouts_here, pps, quants):
                for engine, names in schedulers.items():
                    for scheduler in names:
                        for budget, batch in itertools.product(budgets.get(scheduler, (None,)), batches):
                            found.append(
                                _candidate(
                                    base,
                                    prices[name],
                                    model=model,
                                    hardware=name,
                                    pp=pp,
                                    quant=quant,
                                    replicas=1,
                                    engine=engine,
                                    scheduler=scheduler,
                                    token_budget=budget,
                                    max_batch_size=batch,
                                    num_kv_blocks=None,
                                    **moe_layout(layout, gpus),
                                )
                            )
    return found


def _candidate(base: SystemSpec, price: float, **fields) -> Candidate:
    try:
        return Candidate(dataclasses.replace(base, **fields), price)
    except SimulationError as error:
        return Candidate(
            dataclasses.replace(base, model=fields["model"], hardware=fields["hardware"], replicas=1),
            price,
            "does not fit",
            str(error),
        )


def upper_bound_qps(system: SystemSpec, prompt: np.ndarray, output: np.ndarray) -> float:
    """The most requests a second one replica could ever serve: it prefills and decodes, so it
    cannot beat the slower of the two (token_rates)."""
    return min(token_rates(system, prompt, output)) * BOUND_SLACK


def token_rates(system: SystemSpec, prompt: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """(requests a second one replica could prefill, and decode) at best. Prefilling takes at
    least the prompt tokens over the best rate of a full token-budget batch, decoding at least
    the output tokens over the best rate of a full decode batch (each at its shortest context)."""
    predictor = system.latency_model().predictor
    config = system.scheduler_config()
    chunk = int(min(config.token_budget or system.model_len, system.model_len, max(prompt.max(), 1)))
    prefill_rate = chunk / predictor(chunk, 1, chunk * chunk, 0, 0, 0)  # prompt tokens a second
    batch = min(config.max_batch_size, max(1, config.num_blocks * config.block_size // max(int(prompt.mean()), 1)))
    shortest = int(prompt.min())
    decode_rate = batch / predictor(batch, 0, 0, 0, batch, batch * shortest)  # output tokens a second
    return prefill_rate / float(prompt.mean()), decode_rate / float(max(output.mean(), 1))


def trial_bound(sustained_qps: float, slo, num_requests: float) -> float:
    """The highest QPS a trial of num_requests could pass when one replica sustains at most
    `sustained_qps`. A finite trial can run over it: the queue grows for the trial's length and
    only its latency clause notices. Request i of n waits about i (1/mu - 1/lambda) beyond its
    service, so a clause that holds the waits of a share p of requests to L allows 1/lambda >=
    1/mu - L / (p n). Without such a clause (TBT, TPOT or deadline alone) no rate is ruled out.
    The realized rate of n Poisson arrivals is itself off the nominal one by ~1/sqrt(n)."""
    limit, share = wait_clause(slo)
    if limit is None:
        return math.inf
    gap = 1 / sustained_qps - limit / (share * num_requests)
    if gap <= 0:
        return math.inf
    return (1 / gap) * (1 + 3 / math.sqrt(num_requests))


def wait_clause(slo) -> tuple[float | None, float]:
    """(seconds, share of requests) of the SLO's limit on waiting, (None, 1) where it has none."""
    return slo.waiting_limit() or (None, 1.0)


def prepare(candidate: Candidate, workload: WorkloadSpec, slo) -> None:
    """Fit and bound one candidate, or mark why it cannot run."""
    requests = workload.requests()
    try:
        candidate.system.scheduler_config()
        latency = candidate.system.latency_model()
        too_long = int((requests.prompt_tokens + requests.output_tokens > candidate.system.model_len).sum())
        if too_long:
            candidate.status, candidate.why = "does not fit", f"{too_long} requests longer than the max model length"
            return
    except ProfileError as error:
        words = str(error)
        candidate.status = "does not fit" if "does not fit" in words or "divide" in words else "no latency model"
        candidate.why = words.split(". ")[0]
        return
    candidate.latency_source = latency.source_words
    candidate.output_tokens_per_request = float(requests.output_tokens.mean())
    candidate.sustained_qps = upper_bound_qps(candidate.system, requests.prompt_tokens, requests.output_tokens)
    candidate.slo, candidate.num_requests = slo, len(requests)
    candidate.upper_bound_qps = trial_bound(candidate.sustained_qps, slo, len(requests))


def deployment_bound(candidate: Candidate, replicas: int) -> float:
    """The most QPS R replicas could pass a trial at: each sees n / R of the requests, so each
    may let its queue grow for fewer requests' worth of the waiting clause."""
    share = max(candidate.num_requests / replicas, 1.0)
    return replicas * trial_bound(candidate.sustained_qps, candidate.slo, share)


def replicas_for(goal: Goal, candidate: Candidate, per_replica_qps: float | None) -> int | None:
    if goal.kind == "target_qps":
        return max(1, math.ceil(goal.value / per_replica_qps - 1e-9)) if per_replica_qps else None
    if goal.kind == "gpus":
        count = int(goal.value // candidate.gpus_per_replica)
    else:
        count = int(goal.value // (candidate.gpus_per_replica * candidate.price))
    return count if count >= 1 else None


def best_possible(goal: Goal, candidate: Candidate) -> float:
    """Target: the least cost this candidate could reach (the fewest replicas whose bound reaches
    the target; lower is better). Otherwise minus the most capacity its replicas could reach."""
    if goal.kind == "target_qps":
        replicas = 1
        while deployment_bound(candidate, replicas) < goal.value:
            replicas += 1
            if replicas > MAX_REPLICAS:
                return math.inf  # no deployment of this candidate reaches the target
        return replicas * candidate.gpus_per_replica * candidate.price
    replicas = replicas_for(goal, candidate, None)
    return -deployment_bound(candidate, replicas) if replicas else math.inf


def found_score(goal: Goal, candidate: Candidate) -> tuple[float, float]:
    """Lower is better: (cost, -capacity) for a target (equal costs: the more headroom the
    better), (-capacity, cost) otherwise."""
    if candidate.replicas is None or not candidate.capacity:
        return (math.inf, math.inf)
    if goal.kind == "target_qps":
        return (candidate.cost_per_hour, -candidate.capacity)
    return (-candidate.capacity, candidate.cost_per_hour)


def start_near(candidate: Candidate) -> float:
    """Where a candidate's one-replica search starts: half its bound (a doubling below it), so
    the light loads, whose trials cost the most events, are skipped; 1 QPS without a bound."""
    bound = candidate.upper_bound_qps
    return max(1.0, bound / 2) if bound and bound < math.inf else 1.0


def search_job(system: SystemSpec, workload: WorkloadSpec, slo, options: dict) -> SearchJob:
    """The search `capsim search` runs for this system with the same options."""
    labels = (
        ("model", system.model),
        ("scheduler", system.scheduler),
        ("trace", workload.trace),
        ("parallel", system.parallel_label),
    )
    return SearchJob(
        system,
        workload,
        (slo,),
        options.get("start_qps", 1.0),
        labels,
        options.get("granularity", 0.025),
        options.get("max_trials", 20),
        options.get("early_stop", True),
        expand=options.get("expand", 2.0),
        gallop=options.get("gallop", False),
        stop_when_too_short=True,  # a plan never ranks on a trial too short to load the deployment
        screen=False,  # the planner screens every candidate itself (screen), to order and cut them
    )


def one_replica_job(candidate: Candidate, searched: list[Candidate], workload: WorkloadSpec, slo, options) -> SearchJob:
    """A candidate's search, made as its turn comes: it starts at a searched neighbour's capacity
    if there is one (a first move of one grid step), else at its screened capacity (10%), else at
    half its bound; galloping either way."""
    nearby = neighbour_start(candidate, searched)
    if nearby:
        start = {"start_qps": nearby, "expand": grid_step(options)}
    elif candidate.screened_qps:
        start = {"start_qps": candidate.screened_qps, "expand": DEPLOYMENT_STEP}
    else:
        start = {"start_qps": start_near(candidate)}
    return search_job(candidate.system, workload, slo, options | start | {"gallop": True})


def grid_step(options: dict) -> float:
    """One step of the QPS grid: from a neighbour's capacity the search first tries the
    neighbour's own bracket, whose trials it often shares (capacity/trials.sibling_trial)."""
    return 1 + options.get("granularity", 0.025)


def neighbour_start(candidate: Candidate, found: list[Candidate]) -> float | None:
    """A searched candidate that differs from this one only in its token budget or batch limit
    has nearly its capacity: where the search of this one starts (None without one)."""
    same = [
        c
        for c in found
        if c.capacity_per_replica
        and c.converged
        and _layout_key(c.system) == _layout_key(candidate.system)
        and c.price == candidate.price
    ]
    if not same:
        return None
    budget, batch = candidate.system.token_budget or 0, candidate.system.max_batch_size
    nearest = min(
        same,
        key=lambda c: (
            abs(math.log((c.system.token_budget or 1) / (budget or 1))),
            abs(math.log(c.system.max_batch_size / batch)),
        ),
    )
    return nearest.capacity_per_replica


def _layout_key(system: SystemSpec) -> tuple:
    fields = system.to_dict()
    return tuple(sorted((k, str(v)) for k, v in fields.items() if k not in ("token_budget", "max_batch_size")))


def screened_score(goal: Goal, candidate: Candidate, slack: float) -> float:
    """best_possible with the screened capacity (times `slack`: above 1 hopeful, below 1 wary) in
    place of the bound where it says less; the bound alone where the screen decided nothing."""
    bound = best_possible(goal, candidate)
    if candidate.screened_qps is None:
        return bound
    qps = candidate.screened_qps * slack
    if goal.kind == "target_qps":
        replicas = math.ceil(goal.value / qps - 1e-9)
        cost = replicas * candidate.gpus_per_replica * candidate.price if replicas <= MAX_REPLICAS else math.inf
        return max(bound, cost)
    replicas = replicas_for(goal, candidate, None)
    return max(bound, -(replicas * qps)) if replicas else math.inf


def screen(goal: Goal, live: list[Candidate], workload: WorkloadSpec, slo, options: dict, runner, progress):
    """Short searches (a quarter of the requests) of every candidate whose bound could still beat
    the screened ones, in the order of their bounds; returns the candidates to search in full, in
    the order of what the screen says they could reach. A candidate is never ranked on a screen:
    it only orders the full searches and cuts those that could not enter the top results even
    SCREEN_SLACK better than screened."""
    short = screen_workload(workload)
    if short is None:
        return live
    screened: list[Candidate] = []

    def threshold() -> float:
        scores = sorted(screened_score(goal, c, 1 / SCREEN_SLACK) for c in screened if c.screened_qps)
        return scores[RUNNERS_UP - 1] if len(scores) >= RUNNERS_UP else math.inf

    def done(candidate: Candidate, capacities) -> None:
        capacity = capacities[0]
        candidate.searches.append(capacity)
        decided = capacity.capacity_qps is not None and not capacity.too_short and capacity.converged
        candidate.screened_qps = capacity.capacity_qps if decided else None
        screened.append(candidate)
        if progress:
            progress(candidate)

    def job(candidate: Candidate) -> SearchJob:
        coarse = {"start_qps": start_near(candidate), "gallop": True, "granularity": SCREEN_GRANULARITY}
        return search_job(candidate.system, short, slo, options | coarse)

    runner.run(live, job, done, lambda c: best_possible(goal, c) >= threshold())
    confirm = [c for c in live if c in screened]
    confirm.sort(key=lambda c: screened_score(goal, c, SCREEN_SLACK))
    return confirm


def cut_words(candidate: Candidate) -> str:
    if candidate.screened_qps is not None:
        return (
            f"screened at {candidate.screened_qps:.3g} QPS a replica on short trials: even "
            f"{SCREEN_SLACK - 1:.0%} more cannot beat the deployments found"
        )
    return "its bound cannot beat the deployments screened and found"


def plan(
    goal: Goal,
    pool_candidates: list[Candidate],
    workload: WorkloadSpec,
    slo,
    options: dict,
    workers: int | None = None,
    cache_dir: str | None = None,
    progress=None,
    executor: str = "process",
    ray_address: str | None = None,
) -> list[Candidate]:
    """Search the candidates (branch and bound), then check the best as whole deployments.
    Returns every candidate, each with its status."""
    for candidate in pool_candidates:
        if candidate.status == "candidate":
            prepare(candidate, workload, slo)
    live = []
    for candidate in pool_candidates:
        if candidate.status != "candidate":
            continue
        if best_possible(goal, candidate) == math.inf:
            _cut(
                candidate,
                "not one replica fits the GPU count or the budget"
                if goal.kind != "target_qps"
                else f"cannot reach the target with {MAX_REPLICAS} replicas",
            )
        else:
            live.append(candidate)
    live.sort(key=lambda c: best_possible(goal, c))
    found: list[Candidate] = []

    def threshold() -> float:
        scores = sorted(found_score(goal, c)[0] for c in found)
        return scores[RUNNERS_UP - 1] if len(scores) >= RUNNERS_UP else math.inf

    def finished(candidate: Candidate, capacities) -> None:
        capacity = capacities[0]
        candidate.searches.append(capacity)
        candidate.capacity_per_replica = capacity.capacity_qps
        candidate.converged = capacity.converged
        candidate.binding_clause = "; ".join(capacity.failed_clauses)
        candidate.replicas = replicas_for(goal, candidate, capacity.capacity_qps)
        candidate.capacity = (
            candidate.replicas * capacity.capacity_qps if candidate.replicas and capacity.capacity_qps else None
        )
        candidate.status = "searched" if candidate.capacity else "misses the SLO"
        if capacity.too_short:  # never ranked on a trial too short to load it
            candidate.status, candidate.why = "trial too short", capacity.too_short
        elif candidate.capacity:
            found.append(candidate)
        if progress:
            progress(candidate)

    searched: list[Candidate] = []

    def done(candidate: Candidate, capacities) -> None:
        finished(candidate, capacities)
        searched.append(candidate)

    runner = JobRunner(executor, workers, cache_dir, ray_address)
    try:
        confirm = screen(goal, live, workload, slo, options, runner, progress)
        job = functools.partial(one_replica_job, searched=searched, workload=workload, slo=slo, options=options)
        runner.run(confirm, job, done, lambda c: screened_score(goal, c, SCREEN_SLACK) >= threshold())
        for candidate in live:
            if candidate.status == "candidate":
                _cut(candidate, cut_words(candidate))
        best = sorted(found, key=lambda c: found_score(goal, c))[:RUNNERS_UP]
        check_deployments(goal, best, workload, slo, options, runner, progress)
    finally:
        runner.close()
    ranked = sorted((c for c in found if c.capacity_checked), key=lambda c: found_score(goal, c))
    for rank, candidate in enumerate(ranked):
        candidate.status = "recommended" if rank == 0 else "runner-up"
    return pool_candidates


def _cut(candidate: Candidate, why: str) -> Candidate:
    candidate.status, candidate.why = "cut by the bound", why
    return candidate


def check_deployments(
    goal: Goal, best: list[Candidate], workload: WorkloadSpec, slo, options: dict, runner: JobRunner, progress
) -> None:
    """The capacity of each of the best as a whole deployment (R replicas behind the router), as
    `capsim search --replicas R` finds it. For a target, R moves to the fewest replicas that meet
    it: up while the capacity misses the target, down while one fewer still meets it (replicas
    behind a router serve more than R times one replica: their queues smooth each other's bursts)."""
    checks = {candidate: {} for candidate in best}  # replicas -> capacity, per candidate
    pending = list(best)
    for _ in range(MAX_REPLICA_CHECKS):
        jobs = {}
        for candidate in pending:
            system = dataclasses.replace(candidate.system, replicas=candidate.replicas)
            start = {"start_qps": deployment_start(candidate, checks[candidate]), "expand": DEPLOYMENT_STEP}
            jobs[candidate] = search_job(system, workload, slo, options | start | {"gallop": True})

        def checked(candidate: Candidate, capacities) -> None:
            candidate.searches.append(capacities[0])
            checks[candidate][candidate.replicas] = capacities[0]
            if progress:
                progress(candidate)

        runner.run(list(jobs), jobs, checked, lambda c: False)
        pending = []
        for candidate in checks:
            if candidate.capacity_checked:
                continue
            if not _settle(goal, candidate, checks[candidate]):
                pending.append(candidate)
        if not pending:
            return
    for candidate in pending:  # unsettled after the checks: kept as searched, not recommended
        candidate.why = f"replicas not settled within {MAX_REPLICA_CHECKS} whole-deployment searches"


def deployment_start(candidate: Candidate, checks: dict) -> float:
    """Where the search of R replicas starts: R times one replica's capacity, or the capacity of
    the nearest replica count already checked, scaled to R."""
    r = candidate.replicas
    checked = {n: c.capacity_qps for n, c in checks.items() if c.capacity_qps}
    if checked:
        nearest = min(checked, key=lambda n: abs(n - r))
        return checked[nearest] * r / nearest
    return r * candidate.capacity_per_replica


def _settle(goal: Goal, candidate: Candidate, checks: dict) -> bool:
    """Take what the checks show; True once the replica count is settled, else set the next to try."""

    def capacity_at(replicas):
        found = checks.get(replicas)
        return found.capacity_qps if found is not None else None

    def adopt(replicas):
        found = checks[replicas]
        candidate.replicas, candidate.capacity = replicas, found.capacity_qps
        candidate.converged, candidate.binding_clause = found.converged, "; ".join(found.failed_clauses)
        if found.too_short:  # never ranked on a trial too short to load the deployment
            candidate.status, candidate.why = "trial too short", found.too_short
            return True
        candidate.capacity_checked = True
        return True

    r = candidate.replicas
    if goal.kind != "target_qps":
        return adopt(r)
    meets = (capacity_at(r) or 0) >= goal.value
    if meets:
        if r == 1 or (r - 1 in checks and (capacity_at(r - 1) or 0) < goal.value):
            return adopt(r)
        candidate.replicas = r - 1  # one fewer may still meet it
        return False
    if r + 1 in checks and (capacity_at(r + 1) or 0) >= goal.value:
        return adopt(r + 1)
    candidate.replicas = r + 1
    return False
