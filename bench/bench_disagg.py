"""Disaggregated serving: the cost of a trial, and what the KV moves cost the requests.

A 2048-request `chat` trial of Llama-3.1-8B on 8 H100s, as 4P4D (TP1 pools, KV over NVLink) and
as 8 aggregated sarathi replicas, at light to heavy load: wall time in process (best of three),
batches run, P90 TTFT and TPOT, and the KV moves' queue, link wait and transfer times.
Target (issue: disaggregation): a trial within a small factor of the aggregated one, so that
a P:D split search (`capsim plan --disagg`) costs about what the aggregated plan does.

    python bench/bench_disagg.py [--requests 2048] [--qps 10,30,60]
"""

from __future__ import annotations

import argparse
import time

from capsim.sim import DisaggSpec, SystemSpec, simulate
from capsim.traces import WorkloadSpec


def timed(system, workload):
    best, result = float("inf"), None
    for _ in range(3):
        start = time.perf_counter()
        result = simulate(system, workload)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2048)
    parser.add_argument("--qps", default="10,30,60")
    args = parser.parse_args()
    pool = dict(model="Llama-3.1-8B", hardware="H100-SXM", scheduler="sarathi")
    disaggregated = DisaggSpec(
        SystemSpec(**pool, replicas=4, token_budget=2048), SystemSpec(**pool, replicas=4, max_batch_size=128)
    )
    aggregated = SystemSpec(**pool, replicas=8, token_budget=2048, max_batch_size=256)
    for system in (disaggregated, aggregated):
        system.latency_model()  # fitted once, outside the timings
    print(
        f"{args.requests} chat requests, Llama-3.1-8B on 8 H100s: {disaggregated.words()}  vs  8 x sarathi chunk 2048 "
        f"batch 256"
    )
    print(
        f"{'QPS':>5} {'system':>12} {'trial s':>8} {'batches':>8} {'TTFT P90 ms':>12} {'TPOT P90 ms':>12} "
        f"{'decode queue P90 ms':>20} {'link wait P90 ms':>17} {'transfer P90 ms':>16}"
    )
    for qps in map(float, args.qps.split(",")):
        workload = WorkloadSpec("chat", num_requests=args.requests, seed=0).at_qps(qps)
        for name, system in (("4P4D", disaggregated), ("8 x agg", aggregated)):
            seconds, result = timed(system, workload)
            summary = result.summary()
            moves = result.info.get("disagg")
            cells = [
                f"{moves[k]['p90'] * 1e3:.3g}" if moves else "" for k in ("decode_queue_s", "link_wait_s", "transfer_s")
            ]
            print(
                f"{qps:>5g} {name:>12} {seconds:>8.2f} {result.batches.num_rows:>8} "
                f"{summary['ttft_s']['p90'] * 1e3:>12.1f} "
                f"{summary['tpot_s']['p90'] * 1e3:>12.1f} {cells[0]:>20} {cells[1]:>17} {cells[2]:>16}"
            )


if __name__ == "__main__":
    main()
