"""The P:D split search: the disaggregated deployment (xPyD, TP of each pool, decode batch limit)
with the most capacity on N GPUs of one kind, to set beside the best aggregated one (planner.py).

1. Splits: P prefill instances of TP p and D decode instances of TP d that take N GPUs, or as
   near as whole instances allow (fewer than the smaller TP left over), x the decode batch limits;
   for a mixture of experts, decode instances of d GPUs also as wide EP (TP 1 x DP d, EP d).
   The prefill pool runs sarathi with the largest chunk asked for: a pool that only prefills gains
   nothing from small chunks, which exist to keep decodes flowing.
2. Bound: a request's first token comes from the prefill pool, so where the SLO limits waiting
   (TTFT or scheduling delay) the deployment passes no trial above P prefill instances' best
   prompt rate, widened as plan.trial_bound allows for a finite trial's queue. The decode pool
   gets no bound: its queue shows in TPOT and TBT, which a finite trial's percentiles can hide.
3. Branch and bound, as planner.py: splits by bound, a capacity search each (from half its bound),
   until no split left could beat the RUNNERS_UP-th best found.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

from capsim.capsearch.capacity.jobs import JobRunner
from capsim.capsearch.plan.planner import (
    BOUND_SLACK,
    RUNNERS_UP,
    grid_step,
    moe_layout,
    search_job,
    token_rates,
    trial_bound,
    wait_clause,
)
from capsim.profiles.errors import ProfileError
from capsim.sim import DisaggSpec, SimulationError, SystemSpec
from capsim.traces import WorkloadSpec

MIN_START_QPS = 0.1  # a search's start, at the lowest


@dataclass(eq=False)  # one object a split: kept in dicts by identity
class Split:
    system: DisaggSpec | None
    words: str
    status: str = "candidate"  # does not fit | cut by the bound | searched | misses the SLO | best | runner-up
    why: str = ""
    upper_bound_qps: float | None = None
    capacity: float | None = None
    converged: bool = False
    binding_clause: str = ""
    latency_source: str = ""
    searches: list = field(default_factory=list)
    requests: object = None  # the workload's requests, once prepared

    @property
    def gpus(self) -> int | None:
        return self.system.gpus if self.system else None

    @property
    def capacity_per_gpu(self) -> float | None:
        return self.capacity / self.gpus if self.capacity else None


def shapes(gpus: int, tps: list[int]) -> list[tuple[int, int, int, int]]:
    """(P, p, D, d): P instances of TP p and D of TP d, on `gpus` GPUs or fewer by less than min(p, d)."""
    found = []
    for p in tps:
        for d in tps:
            for prefills in range(1, gpus // p + 1):
                decodes = (gpus - prefills * p) // d
                if decodes >= 1 and gpus - prefills * p - decodes * d < min(p, d):
                    found.append((prefills, p, decodes, d))
    return found


def splits(
    base: SystemSpec, hardware: str, gpus: int, tps: list[int], prefill_chunk: int, decode_batches: list[int]
) -> list[Split]:
    found = []
    # A mixture of experts' decode instances also run wide EP: TP 1 x DP d attention ranks, EP d.
    layouts = ("tp", "dp_ep") if base.model_spec.is_moe else ("tp",)
    for prefills, p, decodes, d in shapes(gpus, tps):
        for layout, batch in itertools.product(layouts, decode_batches):
            if layout == "dp_ep" and d == 1:
                continue
            engine = "" if base.engine == "vllm" else f" {base.engine}"
            decode_words = f"TP{d}" if layout == "tp" else f"TP1 x DP{d} EP{d}"
            words = f"{prefills}P{decodes}D {hardware}{engine} TP{p}/{decode_words}, decode batch {batch}"
            try:
                prefill = dataclasses.replace(
                    base, hardware=hardware, tp=p, replicas=prefills, scheduler="sarathi", token_budget=prefill_chunk
                )
                decode = dataclasses.replace(
                    base,
                    hardware=hardware,
                    replicas=decodes,
                    scheduler="sarathi",
                    max_batch_size=batch,
                    **moe_layout(layout, d),
                )
                system = DisaggSpec(prefill, decode)
                found.append(Split(system, words))
            except SimulationError as error:
                found.append(Split(None, words, "does not fit", str(error)))
    return found


def prepare(split: Split, workload: WorkloadSpec, slo) -> None:
    requests = workload.requests()
    system = split.system
    try:
        system.scheduler_config()
        latency = system.latency_model()
    except (ProfileError, SimulationError) as error:
        split.status, split.why = "does not fit", str(error).split(". ")[0]
        return
    if int((requests.prompt_tokens + requests.output_tokens > system.model_len).sum()):
        split.status, split.why = "does not fit", "requests longer than the max model length"
        return
    split.latency_source = latency.source_words
    split.requests = requests
    prefill_qps, _ = token_rates(system.prefill, requests.prompt_tokens, requests.output_tokens)
    prefills = system.prefill.replicas
    limit, _ = wait_clause(slo)
    split.upper_bound_qps = (
        prefills * trial_bound(prefill_qps * BOUND_SLACK, slo, len(requests) / prefills)
        if limit is not None
        else math.inf
    )


def _shape(split: Split) -> str:
    """A split's words without its decode batch limit."""
    return split.words.rsplit(", decode batch", 1)[0]


def estimate(split: Split) -> float:
    """The most QPS a split could sustain: its prefill bound, and its decode pool's best token
    rate (no bound for cutting, as a queue of decodes shows only in TPOT and TBT, but where a
    search should start looking)."""
    decode = split.system.decode
    requests = split.requests
    _, decode_qps = token_rates(decode, requests.prompt_tokens, requests.output_tokens)
    sustained = decode_qps * decode.replicas * decode.dp_attention
    return max(MIN_START_QPS, min(split.upper_bound_qps, sustained))


def search_splits(
    pool: list[Split], workload: WorkloadSpec, slo, options: dict, runner: JobRunner, progress=None
) -> list[Split]:
    """Search the splits (branch and bound); the best gets status "best", the next "runner-up"."""
    live = []
    for split in pool:
        if split.status == "candidate":
            prepare(split, workload, slo)
            if split.status == "candidate":
                live.append(split)
    live.sort(key=lambda s: -s.upper_bound_qps)
    found: list[Split] = []

    def threshold() -> float:
        best = sorted((s.capacity for s in found), reverse=True)
        return best[RUNNERS_UP - 1] if len(best) >= RUNNERS_UP else 0.0

    def finished(split: Split, capacities) -> None:
        capacity = capacities[0]
        split.searches.append(capacity)
        split.capacity, split.converged = capacity.capacity_qps, capacity.converged
        split.binding_clause = "; ".join(capacity.failed_clauses)
        split.status = "searched" if split.capacity else "misses the SLO"
        if capacity.too_short:  # never ranked on a trial too short to load it
            split.status, split.why = "trial too short", capacity.too_short
        elif split.capacity:
            found.append(split)
        if progress:
            progress(split)

    def job(split: Split):
        """Made as the split's turn comes: from a searched neighbour's capacity (the same split
        with another decode batch limit) with a first move of one grid step, else from half its estimate;
        galloping either way."""
        nearby = [s.capacity for s in found if s.converged and _shape(s) == _shape(split)]
        start = (
            {"start_qps": nearby[-1], "expand": grid_step(options)} if nearby else {"start_qps": estimate(split) / 2}
        )
        return search_job(split.system, workload, slo, options | start | {"gallop": True})

    runner.run(live, job, finished, lambda s: s.upper_bound_qps <= threshold())
    for split in live:
        if split.status == "candidate":
            split.status, split.why = (
                "cut by the bound",
                f"at most {split.upper_bound_qps:.3g} QPS: cannot beat the splits found",
            )
    order = {split: i for i, split in enumerate(pool)}
    for rank, split in enumerate(
        sorted(found, key=lambda s: (-s.capacity, order[s]))[:RUNNERS_UP]
    ):  # ties: the order asked
        split.status = "best" if rank == 0 else "runner-up"
    return pool
