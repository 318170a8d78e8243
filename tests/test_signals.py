"""Stopping a search: Ctrl-C and SIGTERM end it at once with nothing half-written; its workers
never outlive it, even after kill -9; an unreachable Ray cluster fails fast."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

CAPSIM = str(Path(sys.executable).parent / "capsim")
SEARCH = [CAPSIM, "search", "--config-path", "mistral7b_strict", "--workers", "2"]  # six jobs: a pool of two workers


def started_search(tmp_path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    search = subprocess.Popen(
        [*SEARCH, "--cache-dir", tmp_path / "cache", "-o", tmp_path / "out"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "cache").glob("*.trial.parquet")):
        time.sleep(0.1)  # a trial has finished: the workers are busy with the next ones
    workers = [
        p
        for p in psutil.Process(search.pid).children(recursive=True)
        if "resource_tracker" not in " ".join(p.cmdline())
    ]
    assert workers and search.poll() is None
    return search, workers


def gone(processes, within_s: float = 10) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=within_s)
    return not alive


@pytest.mark.slow
@pytest.mark.parametrize("how, code", [("SIGINT to the terminal's process group", 130), ("SIGTERM", 143)])
def test_ctrl_c_and_sigterm_stop_the_search_and_its_workers(tmp_path, how, code):
    search, workers = started_search(tmp_path)
    if how.startswith("SIGINT"):
        os.killpg(search.pid, signal.SIGINT)
    else:
        search.send_signal(signal.SIGTERM)
    assert search.wait(timeout=30) == code
    assert gone(workers)
    stderr = search.stderr.read()
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no partial entries


@pytest.mark.slow
def test_workers_die_with_a_search_killed_with_sigkill(tmp_path):
    search, workers = started_search(tmp_path)
    search.kill()
    search.wait()
    assert gone(workers)


def test_an_unreachable_ray_cluster_fails_fast(tmp_path):
    done = subprocess.run(
        [
            *SEARCH,
            "--executor",
            "ray",
            "--ray-address",
            "127.0.0.1:9",
            "--cache-dir",
            tmp_path / "c",
            "-o",
            tmp_path / "o",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "nothing answers" in done.stderr and "Traceback" not in done.stderr
    # how soon (the probe's 10 s timeout at most): bench/bench_interrupt.py


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_no_process_outlives_a_search_on_a_busy_machine(tmp_path, how):
    """Both cores busy with other work: every descendant of the search (workers, the resource
    tracker) ends after the search is killed or interrupted."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        search, _ = started_search(tmp_path)
        descendants = psutil.Process(search.pid).children(recursive=True)
        if how == "SIGKILL":
            search.kill()
        else:
            os.killpg(search.pid, signal.SIGINT)
        search.wait(timeout=60)
        assert gone(descendants, within_s=30), [" ".join(p.cmdline()) for p in descendants if p.is_running()]
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
