"""Load: latency against load (sweeps), serving metrics, vLLM-format result files, validation against real runs."""
