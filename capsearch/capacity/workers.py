"""Worker processes that never outlive the search that started them.

Each pool worker asks the kernel (Linux prctl PR_SET_PDEATHSIG) for SIGKILL when its parent
dies, so even kill -9 of a search takes its workers with it, and ignores SIGINT: Ctrl-C reaches
the whole process group, and the parent alone decides to stop; it then stops its workers at once
rather than waiting for their trials (finished trials are already in the cache): SIGTERM first,
which a worker turns into SystemExit so that a cache entry it was writing is removed, not left
half-written, then SIGKILL for any still there a quarter second later (the pool catches SystemExit and would
wait on); what a killed worker was writing is removed by its parent (trials.TrialCache.forget_writes_of).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

PR_SET_PDEATHSIG = 1


def _exit(signum, frame):
    raise SystemExit(128 + signum)


def _die_with_parent(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_die_with_parent, initargs=(os.getpid(),)
    )


def kill_pool(pool: ProcessPoolExecutor, grace_s: float = 0.25) -> list[int]:
    """Stop now: cancel what has not started and stop the workers mid-trial; their pids."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # the executor keeps no public list
    pids = [p.pid for p in processes]
    pool.shutdown(wait=False, cancel_futures=True)
    for stop in ("terminate", "kill"):
        for process in processes:
            try:
                getattr(process, stop)()
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + grace_s
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        processes = [p for p in processes if p.is_alive()]
    return pids
