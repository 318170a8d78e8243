"""Mixtures of experts: what a trial costs, what layouts of 8 GPUs serve, and how close capsim comes
to NVIDIA's real MoE runs.

Targets (issue: MoE): a MoE trial of 2048 requests costs at most 1.5x a dense one at the same load;
median |TPOT error| <= 10% on the silicon sample's MoE rows capsim covers.

    python bench/bench_moe.py [--repeat 5] [--skip-validation] [--trials-only]

1. Trial cost: the 2048-request `chat` trial at 4 QPS (vLLM kernel database + host time, vllm_v1),
   best of N in process with the spread, dense Llama-3.1-70B TP4 against gpt-oss-120b TP8 and
   DP8 x EP8 on H200 (latency models fitted beforehand).
2. Capacity of gpt-oss-120b on 8 H200 GPUs at P99 TTFT <= 2 s and P99 TPOT <= 50 ms on `chat`
   (`capsim search`, one run each): TP8; TP4 x 2 replicas; TP1 x DP8 attention with EP8; each
   without and with MTP speculative decoding (3 drafts, acceptance 0.7); and TP8's capacity at
   acceptance 0.3, 0.5, 0.7, 0.9.
3. `capsim validate` on the MoE rows (gpt-oss-120b, Qwen3-235B-A22B-FP8, DeepSeek-R1): median
   |error| of mean TTFT and TPOT per engine and model, and the rows it could not replay.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from capsim.sim import SystemSpec, simulate
from capsim.traces import WorkloadSpec

TRIALS = {
    "Llama-3.1-70B TP4 (dense)": dict(model="Llama-3.1-70B", tp=4),
    "Llama-3.1-8B TP1 (dense, as fast a step)": dict(model="Llama-3.1-8B", tp=1),
    "gpt-oss-120b TP8": dict(model="gpt-oss-120b", tp=8),
    "gpt-oss-120b TP1 x DP8, EP8": dict(model="gpt-oss-120b", tp=1, dp_attention=8, ep=8),
}
LAYOUTS = {
    "TP8": ["--tp", "8"],
    "TP4 x 2": ["--tp", "4", "--replicas", "2"],
    "TP1 x DP8 attention, EP8": ["--tp", "1", "--dp-attention", "8", "--enable-expert-parallel"],
}
SPEC = ["--spec-tokens", "3", "--acceptance-rate", "0.7"]  # MTP: 3 drafts, each accepted at 0.7 after the last
SPEC_WORDS = "MTP 3 drafts at 0.7"
SLO = ["--slo-type", "ttft_tpot", "--ttft-slo", "2", "--tpot-slo", "0.05", "--ttft-percentile", "99"]
SLO += ["--tpot-percentile", "99"]


def trial_costs(repeat: int) -> None:
    """A trial's cost follows its iterations: a fast model keeps few requests in flight and runs
    many small batches for the same tokens, and DP ranks each run their own; so the cost an
    iteration is shown beside the trial's."""
    print(
        "| system (H200, vllm_v1, chat 2048 requests at 4 QPS) | best s | spread s | vs 70B | iterations "
        "| us an iteration |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    workload = WorkloadSpec("chat", num_requests=2048, seed=0).at_qps(4.0)
    dense = None
    for label, layout in TRIALS.items():
        system = SystemSpec(hardware="H200", engine="vllm", scheduler="vllm_v1", **layout)
        system.latency_model()  # fitted (and the kernel-database profile made) before timing
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            simulate(system, workload)
            times.append(time.perf_counter() - start)
        best = min(times)
        dense = dense or best
        iterations = simulate(system, workload).batches.num_rows
        print(
            f"| {label} | {best:.3f} | {max(times) - best:.3f} | {best / dense:.2f}x | {iterations} | "
            f"{best / iterations * 1e6:.1f} |"
        )


def capacities() -> None:
    print("\n| gpt-oss-120b on 8 H200 (vLLM, vllm_v1) | capacity QPS | bracket | outcome | search s |")
    print("| --- | --- | --- | --- | --- |")
    runs = [(label, flags) for label, flags in LAYOUTS.items()]
    runs += [(f"{label}, {SPEC_WORDS}", flags + SPEC) for label, flags in LAYOUTS.items()]
    for label, flags in runs:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            base = ["search", "--model", "gpt-oss-120b", "--hardware", "H200", "--engine", "vllm"]
            base += ["--scheduler", "vllm_v1", "--trace", "chat", "-o", out, "--overwrite"]
            subprocess.run(
                [sys.executable, "-m", "capsim.capsearch.cli", *base, *flags, *SLO], check=True, capture_output=True
            )
            seconds = time.perf_counter() - start
            row = next(csv.DictReader(open(Path(out) / "capacity.csv")))
        print(f"| {label} | {float(row['capacity_qps']):.1f} | {row['bracket']} | {row['outcome']} | {seconds:.0f} |")


def acceptance_sweep() -> None:
    """Capacity against the acceptance rate: TP8 with MTP, 3 drafts."""
    print("\n| gpt-oss-120b TP8 on H200, MTP 3 drafts: acceptance | tokens a step | capacity QPS | fails first above |")
    print("| --- | --- | --- | --- |")
    for rate in (0.3, 0.5, 0.7, 0.9):
        with tempfile.TemporaryDirectory() as out:
            base = ["search", "--model", "gpt-oss-120b", "--hardware", "H200", "--engine", "vllm", "--tp", "8"]
            base += ["--scheduler", "vllm_v1", "--trace", "chat", "-o", out, "--overwrite"]
            spec = ["--spec-tokens", "3", "--acceptance-rate", str(rate)]
            subprocess.run(
                [sys.executable, "-m", "capsim.capsearch.cli", *base, *spec, *SLO], check=True, capture_output=True
            )
            row = next(csv.DictReader(open(Path(out) / "capacity.csv")))
        tokens = 1 + sum(rate**i for i in range(1, 4))
        print(f"| {rate} | {tokens:.2f} | {float(row['capacity_qps']):.1f} | {row['failed_first']} |")


def validation() -> None:
    with tempfile.TemporaryDirectory() as out:
        models = "gpt-oss-120b,Qwen3-235B-A22B-FP8,DeepSeek-R1"
        command = ["validate", "--model", models, "-o", out, "--overwrite"]
        subprocess.run([sys.executable, "-m", "capsim.capsearch.cli", *command], check=True, capture_output=True)
        rows = list(csv.DictReader(open(Path(out) / "validation.csv")))
    groups, missing = defaultdict(list), defaultdict(int)
    for r in rows:
        key = (r["engine"], r["model"])
        if r["tpot_error"]:
            groups[key].append((abs(float(r["ttft_error"])), abs(float(r["tpot_error"]))))
        else:
            missing[key] += 1
    print("\n| engine | model | rows | median abs TTFT error | median abs TPOT error | not replayed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in sorted(set(groups) | set(missing)):
        errors = groups.get(key, [])
        ttft = f"{statistics.median(e[0] for e in errors) * 100:.1f}%" if errors else "-"
        tpot = f"{statistics.median(e[1] for e in errors) * 100:.1f}%" if errors else "-"
        print(f"| {key[0]} | {key[1]} | {len(errors)} | {ttft} | {tpot} | {missing.get(key, 0)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-validation", action="store_true")
    parser.add_argument("--trials-only", action="store_true")
    args = parser.parse_args()
    trial_costs(args.repeat)
    if args.trials_only:
        return
    capacities()
    acceptance_sweep()
    if not args.skip_validation:
        validation()


if __name__ == "__main__":
    main()
