"""The fitted latency model against the kernel database, on batches a simulation really runs.

Simulates the `chat` trace on Llama-3.1-8B / H100 SXM with sarathi (chunk 512) on the shipped
vLLM kernel-database profile, records the composition of every batch (each prefill chunk after
its context, each decode at its own KV length), draws a seeded sample of them per kind, and
compares the fitted latency model's prediction with the database's own price of each batch.
Target (issue: kernel-database profiles): held-out MAPE <= 3% per kind on >= 200 batches.

    python bench/bench_kernel_db_fit.py [--model Llama-3.1-8B --hardware H100-SXM --engine vllm --qps 6]
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table

from capsim.profiles.batch import BatchShape
from capsim.profiles.kernel_db import KernelDatabase
from capsim.profiles.models import get_model
from capsim.sim import SystemSpec, policies, simulate
from capsim.traces import WorkloadSpec


def recorded_batches(system: SystemSpec, qps: float, requests: int) -> list[BatchShape]:
    """Every batch of one simulated trial, with the length of each of its sequences."""
    shapes: list[BatchShape] = []
    base = policies.POLICIES[system.scheduler]

    class Recording(base):
        def schedule(self, now):
            batch = super().schedule(now)
            if batch is not None and batch.num_decodes == len(self.decoding) and not batch.padding_seqs:
                k = self.decode_iterations
                decodes = tuple(r.entry_length + (k - r.entry_iteration) for r in self.decoding.values())
                shapes.append(
                    BatchShape(tuple(c for _, _, c in batch.prefills), tuple(b for _, b, _ in batch.prefills), decodes)
                )
            return batch

    policies.POLICIES[system.scheduler] = Recording
    try:
        simulate(system, WorkloadSpec("chat", num_requests=requests, seed=0).at_qps(qps))
    finally:
        policies.POLICIES[system.scheduler] = base
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Llama-3.1-8B")
    parser.add_argument("--hardware", default="H100-SXM")
    parser.add_argument("--engine", default="vllm")
    parser.add_argument("--qps", type=float, default=6.0)
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--per-kind", type=int, default=300, help="batches sampled per kind")
    args = parser.parse_args()
    system = SystemSpec(
        model=args.model, hardware=args.hardware, scheduler="sarathi", token_budget=512, engine=args.engine
    )
    latency_model = system.latency_model()
    shapes = recorded_batches(system, args.qps, args.requests)
    database = KernelDatabase(get_model(args.model), system.hardware, args.engine, tp=system.tp)
    rng = np.random.default_rng(0)
    table = Table(
        title=f"{latency_model.source_words}: fitted model vs the database on simulated sarathi-512 chat batches "
        f"({len(shapes)} batches at {args.qps:g} QPS)"
    )
    for column in ("kind", "batches", "MAPE %", "P95 APE %", "max APE %", "median signed %"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind in ("prefill", "decode", "mixed"):
        pool = [s for s in shapes if s.kind == kind]
        if not pool:
            continue
        sample = [pool[i] for i in rng.choice(len(pool), min(args.per_kind, len(pool)), replace=False)]
        truth = np.array([database.latency(s) for s in sample])
        predicted = np.array([latency_model.predict(s) for s in sample])
        error = 100 * (predicted / truth - 1)
        table.add_row(
            kind,
            str(len(sample)),
            f"{np.abs(error).mean():.2f}",
            f"{np.percentile(np.abs(error), 95):.2f}",
            f"{np.abs(error).max():.2f}",
            f"{np.median(error):+.2f}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
