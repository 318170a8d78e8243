"""Start a serving engine as a child process, wait until it answers, and stop it: the reference
engine (`capsim serve`) or vLLM (`vllm serve`) alike.

Its output goes to a log file, so a failed start can say why. Stopping sends SIGINT (both
engines shut down cleanly on it), then SIGTERM, then SIGKILL, each after a grace period.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

LOG_TAIL_CHARS = 2000


class EngineStartError(RuntimeError):
    """The engine did not come up; the message carries the end of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def health(url: str, timeout: float = 2.0) -> dict | None:
    """The engine's /health answer (an empty dict when it has no JSON body), None when not up."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            body = response.read()
    except (OSError, urllib.error.URLError):
        return None
    try:
        return json.loads(body) if body else {}
    except json.JSONDecodeError:
        return {}


class ServerProcess:
    def __init__(self, argv: list[str], url: str, log_path: str | Path, env: dict | None = None):
        self.argv, self.url, self.log_path = argv, url, Path(log_path)
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self, ready_timeout_s: float = 600.0) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(
                    self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
                )  # a Ctrl-C at the terminal is ours to pass on
            except FileNotFoundError:
                raise EngineStartError(
                    f"{self.argv[0]} is not installed here (for vLLM: pip install 'capsim[vllm]')"
                ) from None
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineStartError(
                    f"{self.argv[0]} exited with code {self.process.returncode} before it served:\n{self.log_tail()}"
                )
            if health(self.url, timeout=1.0) is not None:
                return self
            time.sleep(0.2)
        self.stop()
        raise EngineStartError(
            f"{self.argv[0]} did not answer {self.url}/health within {ready_timeout_s:g} s:\n{self.log_tail()}"
        )

    def stop(self, grace_s: float = 20.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                return self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                continue
        return self.process.wait()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
