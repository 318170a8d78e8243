"""What a load run ran, recorded in its files so that another run can replay it exactly.

`capsim bench` and `capsim simulate` write, in each load's info, the workload spec (trace, seed,
lengths, arrival process: the same spec gives the same requests), the requests left out of the
figures and the time limit. `capsim simulate --against DIR` reads it back: the same requests at
the same loads (an automatic sweep's measured rates, not a new plan), on the deployment the
user names, then each figure simulated against the folder's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from capsim.capsearch.errors import ConfigError
from capsim.capsearch.load.compare import read_sweep
from capsim.capsearch.load.sweep import LOAD_KINDS, Load
from capsim.traces import WorkloadSpec
from capsim.traces.errors import TraceError


def load_time_limit(time_limit_s: float | None, least_limit_s: float | None, last_arrival_s: float) -> float | None:
    """A load's time limit: the one given; else twice its last arrival, at least `least_limit_s`
    (`capsim bench`'s rule); None (run to the end) where neither is."""
    if time_limit_s is not None or least_limit_s is None:
        return time_limit_s
    return max(least_limit_s, 2 * last_arrival_s)


def record(
    spec: WorkloadSpec, warmup: int, cooldown: int, time_limit_s: float | None, least_limit_s: float | None = None
) -> dict:
    """`time_limit_s`: the limit given; without one, `least_limit_s` says the run stopped a load
    at twice its last arrival, or this much if more (`capsim bench`), and None that it ran to the end."""
    return {
        "workload": spec.to_dict(),
        "warmup": warmup,
        "cooldown": cooldown,
        "time_limit_s": time_limit_s,
        "least_limit_s": least_limit_s,
    }


@dataclass(frozen=True)
class Replayed:
    """A result folder's run, ready to run again."""

    folder: Path
    info: dict  # the folder's description (kind, model or system, workload)
    rows: list[dict]  # its figures, a row a load
    spec: WorkloadSpec
    loads: list[Load]
    warmup: int
    cooldown: int
    time_limit_s: float | None
    least_limit_s: float | None

    def time_limit(self, load: Load) -> float | None:
        """The time the folder's run gave this load."""
        last = float(self.spec.at_qps(load.qps).arrival_s[-1])
        return load_time_limit(self.time_limit_s, self.least_limit_s, last)


def read_replay(folder: Path) -> Replayed:
    """The run a `capsim bench` or `capsim simulate` folder holds; ConfigError where it cannot be replayed."""
    info, rows = read_sweep(folder)
    recorded = info.get("replay")
    if not isinstance(recorded, dict):
        raise ConfigError(
            f"{folder} does not record its workload (written before capsim kept it): run `capsim bench` again, "
            "or simulate the same flags and lay the two over each other with `capsim compare`"
        )
    try:
        spec = WorkloadSpec(**recorded["workload"])
        warmup, cooldown = int(recorded["warmup"]), int(recorded["cooldown"])
        limits = [recorded.get(key) for key in ("time_limit_s", "least_limit_s")]
        time_limit_s, least_limit_s = (None if v is None else float(v) for v in limits)
        loads = [_load(row) for row in rows]
    except (KeyError, TypeError, ValueError, TraceError) as error:
        raise ConfigError(f"{folder}: its recorded workload cannot be read ({error})") from None
    return Replayed(Path(folder), info, rows, spec, loads, warmup, cooldown, time_limit_s, least_limit_s)


def _load(row: dict) -> Load:
    kind, rate, cap = row["kind"], row["request_rate"], row.get("max_concurrency")
    rate = math.inf if rate is None else rate  # JSON has no infinity: every request due at once
    if kind not in LOAD_KINDS or isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise ValueError(f"load {row.get('load')!r} is not a load capsim runs")
    return Load(float(rate), None if cap is None else int(cap), kind)


def with_loads_of(load_run, replayed: Replayed):
    """The load run asked for, at the folder's loads and with its requests left out; the figures
    (percentiles, goodput, result files) as the command's own options say."""
    return dataclasses.replace(load_run, loads=replayed.loads, warmup=replayed.warmup, cooldown=replayed.cooldown)
