"""How fast capsim stops and fails: a search under Ctrl-C (SIGINT to the process group, as a
terminal sends it) and SIGTERM, whether any worker outlives it (also after kill -9), and how long
an unreachable Ray address and `capsim serve` on a busy port take to fail.

Targets (issue: robustness): Ctrl-C or SIGTERM ends a search within 2 s; no worker survives; an
unreachable Ray address fails within its stated 10 s; a busy port fails before the model loads.

    python bench/bench_interrupt.py

Each row starts the shipped mistral7b_strict search (a pool of workers), waits until trials are
being cached, sends the signal, and times the exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

CAPSIM = str(Path(sys.executable).parent / "capsim")


def trial(sig: signal.Signals, to_group: bool) -> tuple[float, int, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        search = subprocess.Popen(
            [CAPSIM, "search", "--config-path", "mistral7b_strict", "--cache-dir", f"{tmp}/c", "-o", f"{tmp}/o"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        while not list(Path(tmp, "c").glob("*.trial.parquet")):
            time.sleep(0.05)
        children = psutil.Process(search.pid).children(recursive=True)
        start = time.perf_counter()
        os.killpg(search.pid, sig) if to_group else search.send_signal(sig)
        code = search.wait()
        seconds = time.perf_counter() - start
        _, alive = psutil.wait_procs(children, timeout=5)
        return seconds, code, len(children), len(alive)


def main() -> None:
    print(f"{'signal':<34}{'exit s':>8}{'code':>6}{'children':>10}{'alive 5 s later':>17}")
    for name, sig, group in (
        ("Ctrl-C (SIGINT to the group)", signal.SIGINT, True),
        ("SIGTERM to the search", signal.SIGTERM, False),
        ("kill -9 of the search", signal.SIGKILL, False),
    ):
        seconds, code, children, alive = trial(sig, group)
        print(f"{name:<34}{seconds:>8.2f}{code:>6}{children:>10}{alive:>17}")
    print()
    print(f"{'failure':<46}{'exit s':>8}{'code':>6}")
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        for name, argv in (
            (
                "search --executor ray --ray-address 127.0.0.1:9",
                [
                    "search",
                    "--executor",
                    "ray",
                    "--ray-address",
                    "127.0.0.1:9",
                    "--cache-dir",
                    f"{tmp}/c",
                    "-o",
                    f"{tmp}/o",
                ],
            ),
            (
                "serve --model tiny on a busy port",
                ["serve", "--model", "tiny", "--dtype", "float32", "--port", str(busy.getsockname()[1])],
            ),
        ):
            start = time.perf_counter()
            done = subprocess.run([CAPSIM, *argv], capture_output=True, timeout=300)
            print(f"{name:<46}{time.perf_counter() - start:>8.2f}{done.returncode:>6}")


if __name__ == "__main__":
    main()
