"""Trial cache size and speed: a search's trials on disk, compact against the full form.

Target (issue: robustness): a 2048-request trial costs <= 100 KB on disk, every SLO still scored
exactly from it.

    python bench/bench_trial_cache.py

Runs the shipped mistral7b_strict search (3 schedulers x 2 traces, 2048 requests a trial) into a
fresh cache, without its short screening trials (`--no-screen`: every entry a 2048-request
trial), then, for every trial it holds: the compact entry's size, its read time, and the size of
the same trial written in full (every token time in Parquet, as RunResult.write does).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from capsim.sim.compact import read_compact

CAPSIM = str(Path(sys.executable).parent / "capsim")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        subprocess.run(
            [
                CAPSIM,
                "search",
                "--config-path",
                "mistral7b_strict",
                "--no-screen",
                "--cache-dir",
                cache,
                "-o",
                f"{tmp}/out",
            ],
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - start
        compact, full, reads = [], [], []
        for entry in sorted(cache.glob("*.trial.parquet")):
            compact.append(entry.stat().st_size)
            t = time.perf_counter()
            result = read_compact(entry)
            reads.append(time.perf_counter() - t)
            result.write(Path(tmp) / "full")
            full.append((Path(tmp) / "full" / "requests.parquet").stat().st_size)
    compact_kb, full_kb = np.array(compact) / 1e3, np.array(full) / 1e3
    print(f"mistral7b_strict search --no-screen, cold: {wall:.1f} s, {len(compact)} trials of 2048 requests")
    print(f"{'per trial':<34}{'mean':>9}{'P50':>9}{'max':>9}")
    print(f"{'compact entry (KB)':<34}{compact_kb.mean():>9.0f}{np.median(compact_kb):>9.0f}{compact_kb.max():>9.0f}")
    print(
        f"{'full form, every token time (KB)':<34}{full_kb.mean():>9.0f}{np.median(full_kb):>9.0f}{full_kb.max():>9.0f}"
    )
    print(
        f"{'read back, bit for bit (ms)':<34}{1e3 * np.mean(reads):>9.0f}"
        f"{1e3 * np.median(reads):>9.0f}{1e3 * np.max(reads):>9.0f}"
    )
    print(f"cache for the whole search: {sum(compact) / 1e6:.1f} MB compact, {sum(full) / 1e6:.1f} MB in full")


if __name__ == "__main__":
    main()
