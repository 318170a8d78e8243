"""Worker processes that never outlive the search that started them.

Workers are forked by a fork server that has imported the search code once (multiprocessing's
forkserver): a worker is ready in milliseconds, where a spawned one imports everything again.
Each worker watches the search's process (a Linux pidfd, else a poll) and exits the moment it is
gone, so even kill -9 of a search takes its workers with it; the fork server, left without
clients, then exits too. A worker ignores SIGINT: Ctrl-C reaches the whole process group, and
the search alone decides to stop; it then stops its workers at once rather than waiting for
their trials (finished trials are already in the cache): SIGTERM first, which a worker turns
into SystemExit so that a cache entry it was writing is removed, not left half-written, then
SIGKILL for any still there a quarter second later (the pool catches SystemExit and would wait
on); what a killed worker was writing is removed by the search (trials.TrialCache.forget_writes_of).
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import forkserver, get_context

POLL_S = 0.2  # where there is no pidfd: how often a worker looks for its search


def _exit(signum, frame):
    raise SystemExit(128 + signum)


def _die_with_search(search: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit)
    try:
        watched = os.pidfd_open(search)
    except ProcessLookupError:  # the search died before this worker started
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd here: poll
        watched = None
    threading.Thread(target=_exit_when_gone, args=(search, watched), daemon=True).start()


def _exit_when_gone(search: int, watched: int | None) -> None:
    if watched is not None:
        select.select([watched], [], [])  # readable once the process has exited
    else:
        while _alive(search):
            time.sleep(POLL_S)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def fork_context():
    context = get_context("forkserver")
    context.set_forkserver_preload(["capsim.capsearch.capacity.jobs"])  # what every worker runs
    return context


def start_fork_server() -> None:
    """Start the fork server now: it imports the search code while the command plans its searches."""
    fork_context()
    forkserver.ensure_running()


def pool_size(executor: str | None, workers: int | None, jobs: int) -> int:
    """The local worker processes that `jobs` searches run in: one a core (or `workers`), never
    more than the jobs; 0 where they run elsewhere (Ray) or in the command's own process."""
    return min(workers or os.cpu_count() or 1, jobs) if executor == "process" else 0


def worker_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=fork_context(), initializer=_die_with_search, initargs=(os.getpid(),)
    )


def submit_here(pool: ProcessPoolExecutor, function, *args):
    """pool.submit, the call run under this process's environment and working folder as they are
    now: a worker forked from the fork server starts with the server's, which may be older
    ($CAPSIM_CACHE, a relative path)."""
    return pool.submit(_call_here, dict(os.environ), os.getcwd(), function, *args)


def _call_here(environ: dict, folder: str, function, *args):
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    if os.getcwd() != folder:
        os.chdir(folder)
    return function(*args)


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
