"""Serve the reference engine for a deployment: the same SystemSpec the simulator replays, so
the engine's scheduler limits and KV blocks are the simulated ones."""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import replace

from capsim.profiles.errors import ProfileError
from capsim.profiles.models import get_model
from capsim.real.engine import ReferenceEngine
from capsim.real.process import ServerProcess
from capsim.sim import SystemSpec

CPU_KV_BYTES = 2 << 30  # the KV cache a CPU engine allocates at most unless told its blocks
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def engine_system(system: SystemSpec, device: str, dtype: str | None = None) -> SystemSpec:
    """The system as this engine will run it: one replica, one stage, and on a CPU, the KV blocks
    capped to what the host can spare (fixed in the spec, so a simulation can use the same)."""
    if system.tp != 1 or system.pp != 1 or system.replicas != 1:
        raise ProfileError("the reference engine runs one replica on one device: use --tp 1 --pp 1 --replicas 1")
    if system.prefix_caching:
        raise ProfileError("the reference engine does not share KV across requests: drop --prefix-caching")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ProfileError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    if system.num_kv_blocks or device.startswith("cuda"):
        return system
    model = get_model(system.model)
    per_block = (
        model.kv_bytes_per_token
        * system.block_size
        * DTYPE_BYTES.get(dtype or model.dtype, model.dtype_bytes)
        // model.dtype_bytes
    )
    if system.scheduler_config().num_blocks * per_block <= CPU_KV_BYTES:
        return system
    return replace(system, num_kv_blocks=CPU_KV_BYTES // per_block)


def serve(
    system: SystemSpec,
    device: str = "cpu",
    dtype: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    seed: int = 0,
    on_ready=None,
    batch_log: str | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; `on_ready(server)` is called once it listens. `batch_log`:
    a Parquet file that gets every batch the engine ran (composition, start, end) at shutdown."""
    from capsim.real.server import ReferenceServer, bind  # aiohttp loads here, not in every capsim command

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        sock = bind(host, port)  # a busy port fails now, not after the model loads
        engine = ReferenceEngine(system, device, dtype, seed, batch_log)
        model = get_model(system.model)
        server = ReferenceServer(engine, model.name, model.vocab, host, port, api_key, sock=sock)
        if on_ready:
            on_ready(server)
        server.serve_until(stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if engine.failure is not None:
        raise RuntimeError(f"the engine failed: {engine.failure}")


def reference_server(
    system: SystemSpec,
    port: int,
    log_path: str,
    device: str = "cpu",
    dtype: str | None = None,
    host: str = "127.0.0.1",
    batch_log: str | None = None,
    api_key: str | None = None,
) -> ServerProcess:
    """A launcher for `capsim serve` of the system in a child process (the API key goes in its
    environment, never on its command line, where any user could read it)."""
    argv = [
        sys.executable,
        "-m",
        "capsim.capsearch.cli",
        "serve",
        "--model",
        system.model,
        "--hardware",
        system.hardware,
        "--scheduler",
        system.scheduler,
        "--max-batch-size",
        str(system.max_batch_size),
        "--block-size",
        str(system.block_size),
        "--memory-utilization",
        str(system.memory_utilization),
        "--device",
        device,
        "--host",
        host,
        "--port",
        str(port),
    ]
    for flag, value in (
        ("--chunk-size", system.token_budget),
        ("--max-model-len", system.max_model_len),
        ("--num-kv-blocks", system.num_kv_blocks),
        ("--dtype", dtype),
        ("--batch-log", batch_log),
    ):
        if value:
            argv += [flag, str(value)]
    env = {**os.environ, "CAPSIM_API_KEY": api_key} if api_key else None
    return ServerProcess(argv, f"http://{host}:{port}", log_path, env=env)
