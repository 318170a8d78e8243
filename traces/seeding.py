"""Independent random streams from one seed, one per purpose.

Lengths, order and arrivals draw from separate streams so that changing the arrival process or
the QPS never changes which requests are drawn, and the other way round.
"""

import numpy as np

_STREAMS = {"lengths": 0, "shuffle": 1, "arrivals": 2}


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    if purpose not in _STREAMS:
        raise KeyError(f"unknown random stream {purpose!r}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_STREAMS[purpose],)))
