"""Real engines: reference engine, vLLM launcher, load generator, engine profiler."""
