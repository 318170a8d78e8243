"""SimPy replay of scheduler policies over workloads: replicas, KV-cache memory, routing, metrics."""
