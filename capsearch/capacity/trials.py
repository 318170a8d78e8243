"""Trials, cached on disk by content: (system, workload, QPS, seed) -> RunResult.

The key leaves the SLO out, so every SLO of a sweep is scored from the same trials. A trial an
early-stop rule cut short is complete only for failing the SLOs that have the clause which cut it
(its TBT or its waiting clause): it is kept under a key that includes that part of the rule, and
a search with an SLO without that clause runs the trial again in full. Each trial
is one file in its compact form (sim.compact, up to about 90 KB for 2048 requests, every SLO still
scored exactly), written to a temporary name and renamed into place, so a search killed at any
moment loses at most the trial that was running. An entry that fails its checksums on read, or
holds another key than its name's, is simulated again and replaced. `capsim cache info` and
`capsim cache prune` look after the folder, which cache_folder.claim checks is capsim's own.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from capsim.capsearch.capacity.cache_folder import ENTRY_SUFFIX, claim
from capsim.common.files import temp_files_of, write_atomically
from capsim.sim import RunResult, SystemSpec, simulate
from capsim.sim.compact import CompactError, read_compact, write_compact
from capsim.sim.early_stop import EarlyStop
from capsim.traces import WorkloadSpec

TRIAL_SCHEMA = 4  # 3: compact files, whole-microsecond times; 4: each file holds its key


@dataclass(frozen=True)
class TrialLimits:
    """How a trial is cut and scored where a peer's search differs from capsim's own.

    capsim: every request is sent; the trial runs until all finish, or until the arrivals' span
    plus as long again (at least two minutes) has passed; unfinished requests are violations.
    """

    time_limit_s: float | None = None  # simulated seconds, then stop (Sarathi-Serve's --time-limit)
    send_window_s: float | None = None  # requests due after this many seconds are not sent (Etalon's timeout)
    completed_only: bool = False  # score finished requests only, as Sarathi-Serve and Etalon do

    def __post_init__(self):
        for name in ("time_limit_s", "send_window_s"):
            value = getattr(self, name)
            if value is not None and not 0 < value < float("inf"):
                raise ValueError(
                    f"{name.removesuffix('_s').replace('_', ' ')} must be a positive number of seconds, got {value}"
                )

    def key(self) -> dict | None:
        """What changes a trial's result (the cache key); scoring does not."""
        if self.time_limit_s is None and self.send_window_s is None:
            return None
        return {"time_limit_s": self.time_limit_s, "send_window_s": self.send_window_s}

    def describe(self) -> dict:
        words = {}
        if self.time_limit_s is not None:
            words["trial time limit"] = f"{self.time_limit_s:g} s simulated"
        if self.send_window_s is not None:
            words["requests sent"] = f"those due in the first {self.send_window_s:g} s"
        words["scored requests"] = (
            "finished ones only" if self.completed_only else "all; unfinished ones are violations"
        )
        return words


def default_cache_dir() -> Path:
    return Path(os.environ.get("CAPSIM_CACHE", Path.home() / ".cache" / "capsim")) / "trials"


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trial_key(
    system: SystemSpec,
    workload: WorkloadSpec,
    qps: float,
    early_stop: EarlyStop | None = None,
    limits: TrialLimits | None = None,
) -> str:
    data = _key_of_system(system, workload) | {"qps": repr(float(qps))}
    if limits is not None and limits.key() is not None:
        data["limits"] = limits.key()
    if not workload.is_builtin:
        stat = Path(workload.trace).stat()
        data["trace_digest"] = _file_digest(str(Path(workload.trace).resolve()), stat.st_size, stat.st_mtime)
    if early_stop is not None:
        data["early_stop"] = asdict(early_stop)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


@lru_cache(maxsize=256)
def _key_of_system(system: SystemSpec, workload: WorkloadSpec) -> dict:
    """The part of a trial's key that its QPS and rule leave alone (a search asks for dozens of
    keys a trial: its own, its rule's parts', its siblings')."""
    latency = system.latency_model()
    return {
        "schema": TRIAL_SCHEMA,
        "system": system.to_dict(),
        "workload": workload.to_dict(),
        "latency_profile": latency.profile_hash,
        "host_time": latency.profile.get("host_time"),  # the shipped fit may change
    }


class TrialCache:
    def __init__(self, folder: str | Path | None = None):
        self.folder = claim(Path(folder) if folder else default_cache_dir())
        self.damaged = 0  # entries found damaged (and simulated again) by this process

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{ENTRY_SUFFIX}"

    def get(self, key: str) -> RunResult | None:
        path = self.path(key)
        try:
            result = read_compact(path, key)
        except FileNotFoundError:
            return None
        except CompactError:
            self.damaged += 1
            return None  # simulated again; put() replaces it
        try:
            os.utime(path)  # last use, for `capsim cache prune --max-size`
        except OSError:
            pass
        return result

    def forget_writes_of(self, pids) -> None:
        """Remove the entries that the (killed) processes `pids` were writing."""
        for path in temp_files_of(self.folder, pids):
            path.unlink(missing_ok=True)

    def put(self, key: str, result: RunResult) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path(key), lambda tmp: write_compact(result, tmp, key))


def time_limit(workload_span_s: float) -> float:
    """A trial's time limit: its arrivals, plus as long again (at least two minutes) to drain."""
    return workload_span_s + max(120.0, workload_span_s)


SIBLING_BATCHES = (16, 32, 64, 128, 256, 512, 1024, 2048)  # batch limits whose trials are looked for


def sibling_trial(system, workload, qps, cache, early_stop, limits) -> RunResult | None:
    """The trial of the same system with another batch limit, where neither limit ever bound: the
    most requests that ran at once stayed under both, so every admission went the same way and
    the trial is this one, bit for bit (the limit is read nowhere else). None without one."""
    if not isinstance(system, SystemSpec):
        return None
    for batch in SIBLING_BATCHES:
        if batch == system.max_batch_size:
            continue
        sibling = replace(system, max_batch_size=batch)
        for rule in (None, *early_stop.parts()) if early_stop else (None,):
            found = cache.get(trial_key(sibling, workload, qps, rule, limits))
            peak = found.info.get("peak_running") if found is not None else None
            if peak is not None and peak < min(batch, system.max_batch_size):
                found.info["system"] = system.to_dict()
                found.info["shared_from"] = f"the same trial with batch limit {batch} (at most {peak} ran at once)"
                return found
    return None


def run_trial(
    system: SystemSpec,
    workload: WorkloadSpec,
    qps: float,
    cache: TrialCache,
    early_stop: EarlyStop | None = None,
    limits: TrialLimits = TrialLimits(),
) -> tuple[RunResult, bool]:
    """The trial's result, and whether it came from the cache."""
    rules = dict.fromkeys((None, *early_stop.parts(), early_stop)) if early_stop else (None,)  # whole: older entries
    for rule in rules:
        cached = cache.get(trial_key(system, workload, qps, rule, limits))
        if cached is not None:
            return cached, True
    shared = sibling_trial(system, workload, qps, cache, early_stop, limits)
    if shared is not None:
        cache.put(result_key(system, workload, qps, shared, early_stop, limits), shared)
        return shared, True
    arrivals = workload.at_qps(qps)
    if limits.send_window_s is not None:  # the client stops sending; at least the first request goes
        arrivals = arrivals.head(max(1, int(np.searchsorted(arrivals.arrival_s, limits.send_window_s, side="right"))))
    limit = limits.time_limit_s or time_limit(float(arrivals.arrival_s[-1]))
    result = simulate(system, arrivals, time_limit_s=limit, early_stop=early_stop)
    cache.put(result_key(system, workload, qps, result, early_stop, limits), result)
    return result, False


def result_key(system, workload, qps, result: RunResult, early_stop, limits) -> str:
    """A trial's key: of the trial, or, cut short, of the rule's part that cut it."""
    reason = result.info.get("stopped_early")
    rule = (early_stop.part_that_stopped(reason) or early_stop) if reason else None
    return trial_key(system, workload, qps, rule, limits)
