"""Trials, cached on disk by content: (system, workload, QPS, seed) -> RunResult.

The key leaves the SLO out, so every SLO of a sweep is scored from the same trials. A trial an
early-stop rule cut short is complete only for failing that rule's SLO: it is kept under a key
that includes the rule, and a search with another SLO runs the trial again in full. Each trial
is written to a temporary folder and renamed into place, so a search killed at any moment loses
at most the trial that was running.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from capsim.sim import RunResult, SystemSpec, simulate
from capsim.sim.early_stop import EarlyStop
from capsim.traces import WorkloadSpec

TRIAL_SCHEMA = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("CAPSIM_CACHE", Path.home() / ".cache" / "capsim")) / "trials"


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trial_key(system: SystemSpec, workload: WorkloadSpec, qps: float, early_stop: EarlyStop | None = None) -> str:
    data = {"schema": TRIAL_SCHEMA, "system": system.to_dict(), "workload": workload.to_dict(), "qps": repr(float(qps)),
            "latency_profile": system.latency_model().profile_hash}
    if not workload.is_builtin:
        stat = Path(workload.trace).stat()
        data["trace_digest"] = _file_digest(str(Path(workload.trace).resolve()), stat.st_size, stat.st_mtime)
    if early_stop is not None:
        data["early_stop"] = asdict(early_stop)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


class TrialCache:
    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else default_cache_dir()

    def get(self, key: str) -> RunResult | None:
        path = self.folder / key
        if not (path / "summary.json").is_file():
            return None
        try:
            return RunResult.read(path)
        except (OSError, ValueError):
            return None  # damaged: run again

    def put(self, key: str, result: RunResult) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.folder))
        try:
            RunResult(result.requests, None, result.info).write(staging)  # batches are not needed to score
            os.replace(staging, self.folder / key)
        except OSError:
            if not (self.folder / key / "summary.json").is_file():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def time_limit(workload_span_s: float) -> float:
    """A trial's time limit: its arrivals, plus as long again (at least two minutes) to drain."""
    return workload_span_s + max(120.0, workload_span_s)


def run_trial(system: SystemSpec, workload: WorkloadSpec, qps: float, cache: TrialCache,
              early_stop: EarlyStop | None = None) -> tuple[RunResult, bool]:
    """The trial's result, and whether it came from the cache."""
    full_key = trial_key(system, workload, qps)
    cached = cache.get(full_key)
    if cached is not None:
        return cached, True
    stop_key = trial_key(system, workload, qps, early_stop) if early_stop else None
    if stop_key and (cached := cache.get(stop_key)) is not None:
        return cached, True
    arrivals = workload.at_qps(qps)
    result = simulate(system, arrivals, time_limit_s=time_limit(float(arrivals.arrival_s[-1])), early_stop=early_stop)
    cache.put(stop_key if result.info.get("stopped_early") else full_key, result)
    return result, False
