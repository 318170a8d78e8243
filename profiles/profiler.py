"""The measured producer: time real forward passes of a model over the designed grid.

The model is built from its architecture with random weights (nothing is downloaded) and run by
the same ModelRunner the reference engine serves with, so a profile measures what the engine
will do. Each grid batch: warm-up runs, then `repeats` timed runs between device
synchronizations; the median is kept. Progress is saved to a partial file every few batches, so
an interrupted profile resumes where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from capsim.profiles.batch import BatchShape
from capsim.profiles.errors import ProfileError
from capsim.profiles.grid import GRIDS
from capsim.profiles.models import ModelSpec
from capsim.profiles.table import ProfileTable
from capsim.profiles.versions import profile_metadata

SAVE_EVERY = 10  # batches between saves of the partial profile
CPU_THREADS = 1  # one intra-op thread: on a small shared CPU, more make the timings erratic
BLOCK_SIZE = 16
CPU_KV_BYTES = 2 << 30  # KV cache a CPU profile may use


def steady_cpu_allocator() -> None:
    """Keep glibc's malloc from switching large buffers between mmap and its heap.

    Its mmap threshold moves with what was allocated before, so the same attention buffers cost
    page faults in one batch and none in the next: prefill times then jump by 10-40% from run to
    run. Serving from the heap, and never trimming it, makes CPU timings repeatable. The
    reference engine does the same, so that it runs as its profile was measured.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap-backed allocations
        libc.mallopt(
            -1, 2**31 - 1
        )  # M_TRIM_THRESHOLD (a C int): keep up to 2 GiB of freed heap, never trim it per free
    except (OSError, AttributeError):
        pass  # not glibc: nothing to steady


def measure_profile(
    model: ModelSpec,
    output: str | Path,
    device: str = "cpu",
    grid: str = "default",
    dtype: str | None = None,
    warmup: int = 1,
    repeats: int = 5,
    seed: int = 0,
    progress=None,
) -> ProfileTable:
    """Measure every grid batch that fits the device and write the ProfileTable to `output`.

    `progress(done, total)` is called after each batch. `dtype` overrides the model's (float32
    runs faster than bfloat16 on most CPUs).
    """
    import torch

    from capsim.profiles.model_runner import ModelRunner, SequenceWork
    from capsim.profiles.torch_model import torch_dtype as model_torch_dtype

    if grid not in GRIDS:
        raise ProfileError(f"unknown grid {grid!r}; grids: {', '.join(GRIDS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ProfileError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    if device == "cpu":
        torch.set_num_threads(CPU_THREADS)  # the reference engine serves a CPU profile's model the same way
        steady_cpu_allocator()
    try:
        torch_dtype = getattr(torch, dtype) if dtype else model_torch_dtype(model)
    except ValueError as error:
        raise ProfileError(str(error)) from None
    bytes_per_token = model.kv_bytes_per_token * torch.tensor([], dtype=torch_dtype).element_size() // model.dtype_bytes
    budget = _kv_budget_tokens(model, device, torch_dtype, bytes_per_token)
    shapes = GRIDS[grid].shapes(model.max_context, budget, max_batch_tokens=16384)
    if not shapes:
        raise ProfileError(f"no grid batch fits {model.name} on {device}: too little memory for its KV cache")
    cache_tokens = max(_cached_tokens(s) for s in shapes)

    output = Path(output)
    partial = output.with_name(output.name + ".partial.parquet")
    hardware = device_name(device)
    engine = "capsim-reference"
    metadata = profile_metadata(
        model,
        hardware,
        1,
        1,
        engine,
        "measured",
        device=device,
        grid=grid,
        run_dtype=str(torch_dtype).removeprefix("torch."),
        warmup=warmup,
        repeats=repeats,
        threads=torch.get_num_threads(),
    )
    # Every batch once a pass, `repeats` passes, the median kept: a slow spell of a shared machine
    # (seconds long) then costs each batch at most one of its samples, instead of all of them.
    visits = shapes * repeats
    done_visits, samples = _resume(partial, visits, metadata)

    runner = ModelRunner(
        model, device=device, dtype=torch_dtype, kv_cache_tokens=cache_tokens, block_size=BLOCK_SIZE, seed=seed
    )
    rng = np.random.default_rng(seed)
    samples = list(samples)
    for index in range(len(done_visits), len(visits)):
        samples.append(_time_batch(runner, SequenceWork, visits[index], rng, model.vocab, warmup))
        if progress:
            progress(index + 1, len(visits))
        if (index + 1) % SAVE_EVERY == 0:
            ProfileTable.from_batches(visits[: index + 1], samples, metadata).to_parquet(partial)
    latencies = np.median(np.reshape(samples, (repeats, len(shapes))), axis=0)
    profile = ProfileTable.from_batches(shapes, latencies, metadata | {"resumed_samples": len(done_visits)})
    profile.to_parquet(output)
    partial.unlink(missing_ok=True)
    return profile


def _time_batch(runner, SequenceWork, shape: BatchShape, rng, vocab: int, warmup: int) -> float:
    """One timed run of the batch, after `warmup` untimed ones (caches, allocator)."""
    work = [
        SequenceWork(i, context, tuple(rng.integers(0, vocab, chunk).tolist()))
        for i, (chunk, context) in enumerate(zip(shape.prefill_chunks, shape.prefill_contexts))
    ]
    first_decode = len(work)
    work += [
        SequenceWork(first_decode + j, context, (int(rng.integers(0, vocab)),))
        for j, context in enumerate(shape.decode_contexts)
    ]
    times = []
    try:
        for attempt in range(warmup + 1):
            runner.synchronize()
            start = time.perf_counter()
            runner.run(work)
            runner.synchronize()
            if attempt >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        for w in work:
            runner.free(w.seq_id)
    return times[0]


def _cached_tokens(shape: BatchShape, block_size: int = BLOCK_SIZE) -> int:
    """KV slots the batch occupies, each sequence rounded up to whole blocks."""
    lengths = [c + q for q, c in zip(shape.prefill_chunks, shape.prefill_contexts)] + [
        c + 1 for c in shape.decode_contexts
    ]
    return sum(-(-n // block_size) * block_size for n in lengths)


def _kv_budget_tokens(model: ModelSpec, device: str, dtype, bytes_per_token: int) -> int:
    if not device.startswith("cuda"):
        return CPU_KV_BYTES // bytes_per_token
    import torch

    free, _ = torch.cuda.mem_get_info()
    weights = model.params * torch.tensor([], dtype=dtype).element_size()
    activations = 4 << 30
    return max(0, int((free * 0.9 - weights - activations) // bytes_per_token))


def _resume(partial: Path, shapes: list[BatchShape], metadata: dict) -> tuple[list[BatchShape], list[float]]:
    """The batches already measured by an interrupted run of the same profile, if any."""
    if not partial.is_file():
        return [], []
    try:
        previous = ProfileTable.read(partial)
    except ProfileError:
        return [], []
    same = all(
        previous.metadata.get(k) == metadata.get(k) for k in ("model", "hardware", "grid", "run_dtype", "device")
    )
    rows = previous.table.to_pylist()
    measured = [
        BatchShape(tuple(r["prefill_chunks"]), tuple(r["prefill_contexts"]), tuple(r["decode_contexts"])) for r in rows
    ]
    if not same or measured != shapes[: len(measured)]:
        return [], []
    return measured, [r["latency_s"] for r in rows]


def device_name(device: str) -> str:
    """The catalog name of the device when it has one (H100-SXM, ...), else what the driver says."""
    if not device.startswith("cuda"):
        return "cpu"
    import torch

    name = torch.cuda.get_device_name(torch.device(device))
    for key, catalog in (
        ("H200", "H200"),
        ("H100 PCIe", "H100-PCIe"),
        ("H100", "H100-SXM"),
        ("A100-SXM", "A100-80GB-SXM"),
        ("A100-PCIE", "A100-80GB-PCIe"),
        ("A100", "A100-80GB-SXM"),
        ("A40", "A40"),
        ("L40S", "L40S"),
    ):
        if key.lower() in name.lower():
            return catalog
    return name
