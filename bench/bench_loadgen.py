"""How much load the load generator can drive while keeping its clocks honest.

A stub engine in a separate process streams every request's tokens at an exact cadence (one
token every --tbt seconds, OpenAI SSE with running usage). The load generator replays Poisson
arrivals against it; since the engine's TBT is known, whatever the client measures beyond it is
the client's own error. Reported per QPS: requests in flight at the peak, how late requests
were sent (P50/P99), the measured TBT P50/P99 against the true one, client CPU seconds, peak RSS.

    python bench/bench_loadgen.py [--qps 10,50,100] [--requests 500] [--tokens 100] [--tbt 0.02]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from capsim.real.client import connect
from capsim.real.loadgen import LoadOptions, run_load
from capsim.traces import Workload


def stub_engine(port: int, tbt: float) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b'{"data": [{"id": "stub"}]}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            start = time.perf_counter()
            for i in range(1, request["max_tokens"] + 1):
                time.sleep(max(0.0, start + i * tbt - time.perf_counter()))  # on schedule, never drifting
                chunk = {"choices": [{"text": "x"}], "usage": {"completion_tokens": i}}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 4096

    Server(("127.0.0.1", port), Handler).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qps", default="10,50,100")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--tbt", type=float, default=0.02)
    args = parser.parse_args()
    from capsim.real.process import free_port

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=stub_engine, args=(port, args.tbt), daemon=True)
    server.start()
    time.sleep(1.0)
    endpoint = connect(f"http://127.0.0.1:{port}")
    print(f"{args.requests} requests x {args.tokens} tokens, true TBT {args.tbt * 1e3:.0f} ms")
    print(f"{'QPS':>6} {'in flight':>9} {'late P50 ms':>11} {'late P99 ms':>11} {'TBT P50 ms':>10} {'TBT P99 ms':>10} "
          f"{'finished':>8} {'CPU s':>6} {'RSS MB':>6}")
    rng = np.random.default_rng(0)
    for qps in (float(q) for q in args.qps.split(",")):
        gaps = rng.exponential(1 / qps, args.requests)
        workload = Workload.from_arrays(np.full(args.requests, 64), np.full(args.requests, args.tokens), np.cumsum(gaps) - gaps[0])
        cpu = time.process_time()
        result = run_load(endpoint, workload, LoadOptions(vocab=32000, time_limit_s=600, max_in_flight=4096))
        cpu = time.process_time() - cpu
        late = result.info["send_lateness_s"]
        tbt = result.tbt()
        in_flight = min(args.requests, qps * args.tokens * args.tbt)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{qps:6g} {in_flight:9.0f} {late['p50'] * 1e3:11.2f} {late['p99'] * 1e3:11.2f} {np.percentile(tbt, 50) * 1e3:10.2f} "
              f"{np.percentile(tbt, 99) * 1e3:10.2f} {int(result.finished().sum()):8d} {cpu:6.1f} {rss:6.0f}")
    server.kill()


if __name__ == "__main__":
    main()
