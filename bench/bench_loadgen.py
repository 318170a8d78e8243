"""How much load the load generator can drive while keeping its clocks honest.

A stub engine in a separate process streams every request's tokens at an exact cadence (one
token every --tbt seconds, OpenAI SSE with running usage). The load generator replays Poisson
arrivals against it; since the engine's TBT is known, whatever the client measures beyond it is
the client's own error. Reported per QPS: requests in flight at the peak, how late requests
were sent (P50/P99), the measured TBT P50/P99 against the true one, client CPU seconds, peak RSS.

Then the many-streams run: --streams (2000) requests open at once, Poisson arrivals at the rate
that keeps that many in flight, against a stub with a slower cadence (--stream-tbt).

    python bench/bench_loadgen.py [--qps 10,50,100,200] [--requests 500] [--tokens 100] [--tbt 0.02] [--streams 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import numpy as np

from capsim.real.client import connect
from capsim.real.loadgen import LoadOptions, run_load
from capsim.traces import Workload


def stub_engine(port: int, tbt: float) -> None:
    """One asyncio loop: thousands of streams, each on an exact schedule."""
    import asyncio

    from aiohttp import web

    async def models(request):
        return web.json_response({"data": [{"id": "stub"}]})

    async def completions(request):
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        start = time.perf_counter()
        for i in range(1, body["max_tokens"] + 1):
            await asyncio.sleep(max(0.0, start + i * tbt - time.perf_counter()))  # on schedule, never drifting
            await response.write(b'data: {"choices": [{"text": "x"}], "usage": {"completion_tokens": %d}}\n\n' % i)
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.add_routes([web.get("/v1/models", models), web.post("/v1/completions", completions)])
    web.run_app(app, host="127.0.0.1", port=port, print=None, backlog=8192)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qps", default="10,50,100,200")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--tbt", type=float, default=0.02)
    parser.add_argument("--streams", type=int, default=2000, help="then hold this many streams at once (closed loop)")
    parser.add_argument("--stream-tbt", type=float, default=0.25, help="the stub's TBT for the many-streams run")
    args = parser.parse_args()
    from capsim.real.process import free_port

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=stub_engine, args=(port, args.tbt), daemon=True)
    server.start()
    time.sleep(1.0)
    endpoint = connect(f"http://127.0.0.1:{port}")
    print(f"{args.requests} requests x {args.tokens} tokens, true TBT {args.tbt * 1e3:.0f} ms")
    print(
        f"{'QPS':>6} {'in flight':>9} {'late P50 ms':>11} {'late P99 ms':>11} {'TBT P50 ms':>10} {'TBT P99 ms':>10} "
        f"{'finished':>8} {'CPU s':>6} {'RSS MB':>6}"
    )
    rng = np.random.default_rng(0)
    for qps in (float(q) for q in args.qps.split(",")):
        gaps = rng.exponential(1 / qps, args.requests)
        workload = Workload.from_arrays(
            np.full(args.requests, 64), np.full(args.requests, args.tokens), np.cumsum(gaps) - gaps[0]
        )
        cpu = time.process_time()
        result = run_load(endpoint, workload, LoadOptions(vocab=32000, time_limit_s=600, max_in_flight=4096))
        cpu = time.process_time() - cpu
        late = result.info["send_lateness_s"]
        tbt = result.tbt()
        in_flight = min(args.requests, qps * args.tokens * args.tbt)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{qps:6g} {in_flight:9.0f} {late['p50'] * 1e3:11.2f} {late['p99'] * 1e3:11.2f} "
            f"{np.percentile(tbt, 50) * 1e3:10.2f} "
            f"{np.percentile(tbt, 99) * 1e3:10.2f} {int(result.finished().sum()):8d} {cpu:6.1f} {rss:6.0f}"
        )
    server.kill()
    many_streams(args)


def many_streams(args) -> None:
    """Thousands of streams at once: Poisson arrivals at the rate that keeps --streams open."""
    from capsim.real.process import free_port

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=stub_engine, args=(port, args.stream_tbt), daemon=True)
    server.start()
    time.sleep(1.0)
    tokens, count = 40, 2 * args.streams
    qps = args.streams / (tokens * args.stream_tbt)
    gaps = np.random.default_rng(1).exponential(1 / qps, count)
    workload = Workload.from_arrays(np.full(count, 64), np.full(count, tokens), np.cumsum(gaps) - gaps[0])
    cpu = time.process_time()
    result = run_load(connect(f"http://127.0.0.1:{port}"), workload, LoadOptions(vocab=32000, time_limit_s=600))
    cpu = time.process_time() - cpu
    sent, ended = result.column("arrival_s"), result.column("finish_s")
    peak = int(
        np.max(
            np.cumsum(np.array([1] * count + [-1] * count)[np.argsort(np.concatenate((sent, ended)), kind="stable")])
        )
    )
    late, tbt = result.info["send_lateness_s"], result.tbt()
    print(
        f"\n{count} requests x {tokens} tokens at {qps:g} QPS, true TBT {args.stream_tbt * 1e3:.0f} ms: "
        f"{peak} streams open at the peak, sends late P50 {late['p50'] * 1e3:.2f} ms P99 {late['p99'] * 1e3:.2f} ms, "
        f"TBT P50 {np.percentile(tbt, 50) * 1e3:.2f} ms P99 {np.percentile(tbt, 99) * 1e3:.2f} ms, "
        f"{int(result.finished().sum())} finished, client CPU {cpu:.1f} s, peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    server.kill()


if __name__ == "__main__":
    main()
