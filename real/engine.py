"""The frontend's handle on the reference engine: it starts the engine core in a process of its
own (engine_core.py), hands it requests and aborts over a pipe, and routes the tokens it sends
back to each request's stream. Thread-safe: every HTTP handler thread calls it.
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass, field

from capsim.sim import SystemSpec

START_TIMEOUT_S = 600.0  # building a large model on a GPU takes a while


class EngineError(RuntimeError):
    """The engine cannot take a request or has failed; the message says why."""


@dataclass
class Stream:
    """What the client side of a request sees: (token id, time) pairs, then None at the end."""

    request_id: int
    prompt_len: int
    tokens: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    error: str | None = None  # set before the final None when the engine could not finish it


class ReferenceEngine:
    def __init__(
        self,
        system: SystemSpec,
        device: str = "cpu",
        dtype: str | None = None,
        seed: int = 0,
        batch_log: str | None = None,
    ):
        if system.prefix_caching:
            raise EngineError("the reference engine does not share KV across requests: turn prefix caching off")
        self.system = system
        self.config = system.scheduler_config()
        self.clock_start = time.perf_counter()  # the engine's clock zero, shared with the core (same host clock)
        self.streams: dict[int, Stream] = {}
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.failure: str | None = None
        self.latest_stats: dict = {
            "waiting": 0,
            "running": 0,
            "kv_blocks_used": 0,
            "kv_blocks": self.config.num_blocks,
            "batches": 0,
            "preemptions": 0,
            "busy_s": 0.0,
        }  # the core's figures, idle until it reports
        from capsim.real.engine_core import run_core  # torch loads here, not in every capsim command

        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no copied threads or CUDA state
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=run_core,
            name="capsim-engine-core",
            daemon=True,
            args=(child, system, device, dtype, seed, self.clock_start, batch_log),
        )
        self.process.start()
        child.close()
        if not self.conn.poll(START_TIMEOUT_S):
            self.process.kill()
            raise EngineError(f"the engine core did not start within {START_TIMEOUT_S:g} s")
        kind, info = self.conn.recv()
        if kind != "ready":
            self.process.join(5)
            raise EngineError(f"the engine core could not start: {info}")
        self.reader = threading.Thread(target=self._read, name="capsim-engine-reader", daemon=True)
        self.reader.start()

    @property
    def alive(self) -> bool:
        return self.failure is None and self.process.is_alive()

    def submit(self, prompt: list[int], max_tokens: int, tokens=None) -> Stream:
        """Queue a request; its tokens come out of the returned stream (into `tokens`, anything
        with put(), when given: an asyncio server's queue)."""
        if not self.alive:
            raise EngineError(f"the engine has stopped: {self.failure or 'its process exited'}")
        total, config = len(prompt) + max_tokens, self.config
        if total > config.max_model_len:
            raise EngineError(
                f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) = {total} exceeds the "
                f"engine's max model length of {config.max_model_len}"
            )
        if -(-total // config.block_size) > config.num_blocks - int(config.watermark * config.num_blocks):
            raise EngineError(
                f"the request needs {total} tokens of KV cache, more than the engine's "
                f"{config.num_blocks * config.block_size}"
            )
        with self.lock:
            stream = Stream(next(self.ids), len(prompt), tokens if tokens is not None else queue.SimpleQueue())
            self.streams[stream.request_id] = stream
            self.conn.send(("add", stream.request_id, prompt, max_tokens))
        return stream

    def abort(self, stream: Stream) -> None:
        with self.lock:
            if self.streams.pop(stream.request_id, None) is not None and self.alive:
                self.conn.send(("abort", stream.request_id))

    def stats(self) -> dict:
        return dict(self.latest_stats)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the core (it writes its batch log), and end every open stream."""
        with self.lock:
            if self.process.is_alive():
                try:
                    self.conn.send(("stop",))
                except OSError:
                    pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
        self.reader.join(5)
        self._close_all("the server is shutting down")

    def _read(self) -> None:
        try:
            while True:
                message = self.conn.recv()
                if message[0] == "failed":
                    self.failure = message[1]
                    break
                _, tokens, finished, closed, self.latest_stats = message
                with self.lock:
                    streams = self.streams
                    for request_id, token, at in tokens:
                        if (stream := streams.get(request_id)) is not None:
                            stream.tokens.put((token, at))
                    for request_id in finished:
                        if (stream := streams.pop(request_id, None)) is not None:
                            stream.tokens.put(None)
                    for request_id, reason in closed:
                        if (stream := streams.pop(request_id, None)) is not None:
                            stream.error = reason
                            stream.tokens.put(None)
        except (EOFError, OSError):
            pass
        if self.process.exitcode not in (None, 0) and self.failure is None:
            self.failure = f"the engine core exited with code {self.process.exitcode}"
        self._close_all(f"engine failure: {self.failure}" if self.failure else "the server is shutting down")

    def _close_all(self, reason: str) -> None:
        with self.lock:
            streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.error = reason
            stream.tokens.put(None)
