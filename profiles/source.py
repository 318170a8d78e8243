"""Where a profile's latencies came from, in words every output prints."""

from __future__ import annotations


def describe_source(metadata: dict) -> str:
    """E.g. "vLLM 0.24.0 kernels measured on H100 SXM (NVIDIA kernel database)", "analytic estimate",
    then " + <engine> host time ..." where capsim added it (profiles/host_time.py)."""
    words = _kernel_words(metadata)
    host = metadata.get("host_time_words")
    return f"{words} + {host}" if host else words


def _kernel_words(metadata: dict) -> str:
    source = metadata.get("source")
    if source == "kernel-db":
        return metadata.get("source_words") or f"{metadata.get('engine')} kernel database on {metadata.get('hardware')}"
    if source == "measured":
        engine = metadata.get("engine", "an engine")
        if engine == "capsim-reference":
            engine = "capsim's reference engine"
        where = metadata.get("device_name") or metadata.get("hardware")
        return f"measured: {engine} on {where}"
    if source == "analytic":
        calibration = metadata.get("calibration")
        return "analytic estimate" + (
            f" (roofline calibrated to {calibration})" if calibration else " (uncalibrated roofline)"
        )
    return str(source)
