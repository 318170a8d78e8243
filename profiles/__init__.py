"""Latency: model and hardware catalogs, per-batch profiles, regressors, KV-cache memory."""
