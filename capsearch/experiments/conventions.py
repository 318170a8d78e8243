"""The peers' conventions: what a search assumes where its user did not say.

capsim answers a Sarathi-Serve or Etalon user's question as that peer would pose it: their SLO
defaults (read from their capacity-search code) and, for their configs, their workload
generation (Poisson gaps capped at 3/QPS, the trace shuffled with seed 42 before the first N
requests are taken). capsim's own defaults stay plain Poisson in file order.

- capsim: P99 TBT <= 0.1 s and P50 scheduling delay <= 2 s (tbt_ttft); ttft_tpot at P99; deadline
  slack 0.5 s.
- sarathi (sarathi/benchmark/capacity_search/main.py): P99 TBT <= 0.2 s and P50 scheduling delay
  <= 2 s.
- etalon (etalon/capacity_search/main.py): slo type deadline; TBT 0.03 s at P99; TTFT 0.1 s at P90
  (TTFT itself, not scheduling delay); TPOT 0.1 s at P90; slack 0.3 s; miss rate 0.1 at P99.
"""

from __future__ import annotations

CONVENTIONS = ("capsim", "sarathi", "etalon")

SLO_DEFAULTS = {
    "capsim": {
        "slo_type": "tbt_ttft",
        "tbt": 0.1,
        "tbt_percentile": 99,
        "ttft": 2.0,
        "ttft_percentile": None,
        "ttft_metric": "scheduling_delay",
        "tpot": 0.1,
        "tpot_percentile": 99,
        "ttft_slack": 0.5,
        "miss_rate": 0.1,
        "miss_rate_percentile": 99,
        "denominator": "deadlines",
    },
    "sarathi": {
        "slo_type": "tbt_ttft",
        "tbt": 0.2,
        "tbt_percentile": 99,
        "ttft": 2.0,
        "ttft_percentile": 50,
        "ttft_metric": "scheduling_delay",
        "tpot": 0.1,
        "tpot_percentile": 99,
        "ttft_slack": 0.5,
        "miss_rate": 0.1,
        "miss_rate_percentile": 99,
        "denominator": "deadlines",
    },
    "etalon": {
        "slo_type": "deadline",
        "tbt": 0.03,
        "tbt_percentile": 99,
        "ttft": 0.1,
        "ttft_percentile": 90,
        "ttft_metric": "ttft",
        "tpot": 0.1,
        "tpot_percentile": 90,
        "ttft_slack": 0.3,
        "miss_rate": 0.1,
        "miss_rate_percentile": 99,
        "denominator": "deadlines",
    },
}

PEER_SEED = 42  # both peers' request generators


def capsim_ttft_percentile(slo_type: str) -> float:
    """capsim's TTFT percentile: P50 beside a TBT limit (Sarathi-Serve's form), P99 beside TPOT."""
    return 50 if slo_type == "tbt_ttft" else 99


WORDS = {
    "capsim": "capsim's",
    "sarathi": "Sarathi-Serve's",
    "etalon": "Etalon's",
}

# Bounds on what a config or flag may ask: beyond them is a typo, not an experiment (and
# traces.spec.MAX_REQUESTS, the requests of a trial).
MAX_REPLICAS = 4096
MAX_TARGET_QPS = 1e6  # requests a second a plan may target
MAX_BUDGET = 1e6  # dollars an hour a plan may spend
MAX_TRIALS = 1000  # trials a search
