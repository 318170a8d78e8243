"""Run many capacity searches: one job per (system, workload), each searching every SLO given.

Jobs are independent, so they run in parallel: a local process pool by default, Ray for a
cluster (`executor="ray"`, with `ray_address` to join one), or in this process (`serial`).
All share one trial cache on disk.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from capsim.capsearch.capacity.cache_folder import claim, remove_leftovers
from capsim.capsearch.capacity.search import Capacity, find_capacity, is_converged, too_short
from capsim.capsearch.capacity.slo import slo_to_dict
from capsim.capsearch.capacity.trials import TrialCache, TrialLimits, default_cache_dir, run_trial
from capsim.capsearch.capacity.workers import kill_pool, pool_size, submit_here, worker_pool
from capsim.capsearch.errors import ConfigError
from capsim.sim import SystemSpec
from capsim.traces import WorkloadSpec

EXECUTORS = ("process", "ray", "serial")
SCREEN_FRACTION = 4  # screening trials have a quarter of the requests ...
SCREEN_MIN_REQUESTS = 256  # ... and at least this many; a workload this short is not screened
SCREEN_GRANULARITY = 0.1  # a screen's bracket: coarse, the full search settles the rest
RAY_CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SearchJob:
    system: SystemSpec
    workload: WorkloadSpec
    slos: tuple
    start_qps: float
    labels: tuple[tuple[str, str], ...]  # (("model", ...), ("scheduler", ...), ...)
    granularity: float = 0.025
    max_trials: int = 20
    early_stop: bool = True
    trial: TrialLimits = TrialLimits()
    conventions: tuple[tuple[str, str], ...] = ()  # (("SLO defaults", "Etalon's"), ...): said in every report
    expand: float = 2.0  # the first move from start_qps until a pass and a fail are held (search.find_capacity)
    gallop: bool = False  # start_qps is an estimate: each further move doubles
    stop_when_too_short: bool = False  # a planner's: a pass its trials are too short to judge ends the search
    screen: bool = True  # steer the search with short trials first (search_slo); the planner screens on its own


def run_job(job: SearchJob, cache_dir: str | None = None) -> list[Capacity]:
    cache = TrialCache(cache_dir)
    latency = job.system.latency_model()
    # Scoring finished requests only would make a cut-short trial look better: no early stop then.
    early_stop = job.early_stop and not job.trial.completed_only
    full = JobTrials(job, job.workload, cache, latency, early_stop)
    short = screen_workload(job.workload) if job.screen else None
    screen = JobTrials(job, short, cache, latency, early_stop) if short is not None else None
    return [search_slo(job, slo, full, screen) for slo in job.slos]


def screen_workload(workload: WorkloadSpec) -> WorkloadSpec | None:
    """The short workload a search is steered on, or None where the workload is short already."""
    count = workload.num_requests // SCREEN_FRACTION
    return replace(workload, num_requests=count) if count >= SCREEN_MIN_REQUESTS else None


class JobTrials:
    """A job's trials of one workload, each run once (or read from the cache) and scored for
    every SLO. The QPS values run in full are remembered: the next SLO's search opens with the
    bracket they give it, at no cost (search.find_capacity's `known`)."""

    def __init__(self, job: SearchJob, workload: WorkloadSpec, cache: TrialCache, latency, early_stop: bool):
        self.job, self.workload, self.cache, self.latency = job, workload, cache, latency
        requests = workload.requests()
        self.num_requests, self.total_tokens = len(requests), int(requests.output_tokens.sum())
        self.early_stop = early_stop
        self.run_in_full: set[float] = set()

    def for_slo(self, slo, best: dict):
        """`trial(qps) -> (passed, details)` for find_capacity; `best` gets the highest passing
        trial's scored requests (the capacity's figures come from it)."""
        rule = slo.early_stop(self.num_requests, self.total_tokens) if self.early_stop else None
        run_in_full = sorted(self.run_in_full)

        def trial(qps: float):
            result, cached = run_trial(self.job.system, self.workload, qps, self.cache, rule, self.job.trial)
            if not result.info.get("stopped_early"):
                self.run_in_full.add(qps)
            scored = scored_part(result, self.job.trial)
            details = score(slo, scored, self.latency)
            cut = result.info.get("stopped_early")
            part = rule.part_that_stopped(cut) if cut and rule else None
            if part is not None and not details["passed"]:  # the cut decides one clause; the rest are unknown
                details["failed_clauses"] = [f"{slo.clause_lost_by(part)} not met (cut short)"]
            if details["passed"] and qps > best.get("qps", 0):
                best.update(qps=qps, result=scored)
            return details.pop("passed"), details | {
                "cached": cached,
                "stopped_early": result.info.get("stopped_early"),
            }

        return trial, run_in_full

    def describe(self) -> dict:
        return {
            "search": f"placed by short trials of {self.num_requests} requests ({SCREEN_GRANULARITY:.0%} steps), "
            "decided by full ones: the capacity and its bracket are full trials"
        }


def search_slo(job: SearchJob, slo, full: JobTrials, screen: JobTrials | None) -> Capacity:
    """One SLO's search. With a screen, a coarse search on short trials first places the capacity
    (to SCREEN_GRANULARITY), and the search on full trials starts one grid step above the screen's
    pass, moving a step at a time (doubling while it goes the same way): the screen only steers;
    the capacity and its bracket are full trials."""
    start = {"start_qps": job.start_qps, "expand": job.expand, "gallop": job.gallop}
    screened = []
    if screen is not None:
        trial, known = screen.for_slo(slo, {})
        passed_at, failed_at, screened = find_capacity(
            trial, slo, job.start_qps, SCREEN_GRANULARITY, job.max_trials, job.expand, job.gallop, known=known
        )
        screened = [t | {"screen": True, "requests": screen.num_requests} for t in screened]
        if passed_at:  # the full capacity lies mostly 0 to 2 grid steps above the screen's: start one above
            start = {"start_qps": passed_at * (1 + job.granularity), "expand": 1 + job.granularity, "gallop": True}
        elif failed_at:
            start = {"start_qps": failed_at, "expand": 1 + SCREEN_GRANULARITY, "gallop": True}
    best = {}
    trial, known = full.for_slo(slo, best)
    enough = (lambda qps: too_short(slo, full.num_requests, qps) is not None) if job.stop_when_too_short else None
    capacity, failing, trials = find_capacity(
        trial, slo, granularity=job.granularity, max_trials=job.max_trials, enough=enough, known=known, **start
    )
    failed = next((t.get("failed_clauses", []) for t in trials if t["qps"] == failing), [])
    at_capacity = figures_at(slo, best["result"], full.latency) | {"qps": capacity} if capacity is not None else {}
    short = too_short(slo, best["result"].requests.num_rows, capacity) if capacity is not None else None
    return Capacity(
        labels=dict(job.labels),
        slo=slo_to_dict(slo),
        slo_name=slo.name,
        capacity_qps=capacity,
        failing_qps=failing,
        trials=screened + trials,
        latency_source=full.latency.source_words,
        system=job.system.to_dict(),
        workload=job.workload.to_dict(),
        converged=is_converged(capacity, failing, job.granularity) and not short,
        failed_clauses=failed,
        at_capacity=at_capacity,
        conventions=dict(job.conventions) | job.trial.describe() | (screen.describe() if screen else {}),
        too_short=short,
    )


def scored_part(result, limits: TrialLimits):
    """The requests an SLO is scored on: all (unfinished ones are violations), or, as the peers
    score a trial cut by a time limit, the finished ones only."""
    return result.only(result.finished()) if limits.completed_only else result


def score(slo, result, latency_model) -> dict:
    return slo.score(result, prefill_seconds=lambda prompt: prefill_seconds(latency_model, prompt))


def figures_at(slo, result, latency_model) -> dict:
    """Latency figures of the capacity's trial, the tail included: a stall a P99 hides shows in
    P99.9 and max TBT; and the SLO's own figures (a deadline SLO: Etalon's other fluidity figures)."""
    tbt, ttft, delay = result.tbt(), result.ttft(), result.scheduling_delay()
    figures = {"requests": result.requests.num_rows, "finished": int(result.finished().sum())}
    for name, values, percentiles in (
        ("tbt", tbt, (50, 99, 99.9)),
        ("ttft", ttft, (50, 99)),
        ("sched_delay", delay, (50, 99)),
    ):
        values = values[np.isfinite(values)]
        for p in percentiles:
            figures[f"{name}_p{p:g}_s"] = float(np.percentile(values, p, method="higher")) if len(values) else None
        figures[f"{name}_max_s"] = float(values.max()) if len(values) else None
    return figures | slo.figures(result, lambda prompt: prefill_seconds(latency_model, prompt))


def prefill_seconds(latency_model, prompt_tokens: np.ndarray) -> np.ndarray:
    """The predicted time to prefill each prompt alone in one batch: the deadline SLO's start."""
    p = np.asarray(prompt_tokens, dtype=np.float64)
    features = np.column_stack([p, np.ones_like(p), p * p, np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)])
    return latency_model.predictor.predict_many(features)


def run_jobs(
    jobs: list[SearchJob],
    executor: str = "process",
    workers: int | None = None,
    ray_address: str | None = None,
    cache_dir: str | None = None,
    on_done=None,
) -> list[Capacity]:
    """Every job's capacities, in job order; `on_done(job)` is called as each job finishes."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    remove_leftovers(claim(Path(cache_dir) if cache_dir else default_cache_dir()), old_format=False)
    results: dict[int, list[Capacity]] = {}

    def done(index: int, capacities: list[Capacity]) -> None:
        results[index] = capacities
        on_done and on_done(jobs[index])

    window = pool_size(executor, workers, len(jobs)) if executor == "process" else workers
    runner = JobRunner(executor, window, cache_dir, ray_address)
    try:
        runner.run(sorted(range(len(jobs)), key=lambda i: -tokens_to_simulate(jobs[i])), jobs, done)
    finally:
        runner.close()
    return [c for i in range(len(jobs)) for c in results[i]]


def tokens_to_simulate(job: SearchJob) -> int:
    """A job's trials cost about as many iterations as its workload makes tokens: jobs start
    largest first, so that those still running when the rest are done (cores idle) are short."""
    return int(job.workload.requests().output_tokens.sum()) * len(job.slos)


def check_reachable(address: str | None, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail in seconds, not never, when a Ray address names nothing that answers."""
    if not address or address in ("auto", "local"):
        return
    host_port = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: give host:port (or ray://host:port, auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConfigError(
            f"--ray-address {address}: nothing answers there within {timeout_s:g} s ({error.strerror or error}); "
            "is the Ray head running?"
        ) from None


class JobRunner:
    """The one place searches run: in order, a window of them in flight (a local process pool, Ray,
    or this process). `hopeless(key)` is asked as each one's turn comes: from the first it is true
    for, none is started (the planner's bound). The pool or Ray connection lives until close()."""

    def __init__(self, executor: str, workers: int | None, cache_dir: str | None, ray_address: str | None = None):
        self.executor, self.cache_dir, self.ray_address = executor, cache_dir, ray_address
        self.requested = workers
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.pool = None
        self.ray = None

    def run(self, ordered: list, jobs, on_done, hopeless=lambda key: False) -> None:
        """`jobs[key]` (or `jobs(key)`, made as its turn comes) for each key of `ordered`;
        `on_done(key, capacities)` as each finishes."""
        job_of = jobs if callable(jobs) else jobs.__getitem__
        if self.executor == "serial" or (self.executor == "process" and self.workers == 1):
            for candidate in ordered:
                if hopeless(candidate):
                    break
                on_done(candidate, run_job(job_of(candidate), self.cache_dir))
            return
        submit, wait_one = self._ray() if self.executor == "ray" else self._pool()
        queue, running = list(ordered), {}
        try:
            while queue or running:
                while queue and len(running) < self.workers:
                    candidate = queue.pop(0)
                    if hopeless(candidate):
                        queue.clear()
                        break
                    running[submit(job_of(candidate))] = candidate
                if not running:
                    break
                handle, capacities = wait_one(running)
                on_done(running.pop(handle), capacities)
        except BaseException:
            self.close(failed=True)
            raise

    def _pool(self):
        if self.pool is None:
            self.pool = worker_pool(self.workers)

        def wait_one(running):
            future = next(iter(wait(running, return_when=FIRST_COMPLETED)[0]))
            return future, future.result()

        return (lambda job: submit_here(self.pool, run_job, job, self.cache_dir)), wait_one

    def _ray(self):
        if self.ray is None:
            try:
                import ray
            except ImportError:
                raise ConfigError("the ray executor needs Ray: pip install 'capsim[ray]'") from None
            self.started_ray = not ray.is_initialized()
            if self.started_ray:
                check_reachable(self.ray_address)
                ray.init(
                    address=self.ray_address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True
                )
            self.ray, self.remote_job = ray, ray.remote(run_job)
            self.workers = self.requested or max(1, int(ray.cluster_resources().get("CPU", 1)))

        def wait_one(running):
            done, _ = self.ray.wait(list(running), num_returns=1)
            return done[0], self.ray.get(done[0])

        return (lambda job: self.remote_job.remote(job, self.cache_dir)), wait_one

    def close(self, failed: bool = False) -> None:
        if self.pool is not None:
            if failed:  # Ctrl-C, SIGTERM, a failed search: stop the others now
                TrialCache(self.cache_dir).forget_writes_of(kill_pool(self.pool))
            else:
                self.pool.shutdown()
            self.pool = None
        if self.ray is not None and self.started_ray:
            self.ray.shutdown()
        self.ray = None
