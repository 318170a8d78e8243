"""Capacity: SLOs, the binary search, trials and their cache, the job runner, real confirmation."""
