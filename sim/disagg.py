"""DisaggSpec: a disaggregated deployment (xPyD): P prefill instances and D decode instances of
one model, each pool with its GPU, TP and scheduler, joined by a KV link (sim/kv_link.py).

It offers what the capacity search reads of a SystemSpec (model, labels, KV fit, latencies,
a dictionary for cache keys and reports), so `capsim search` and `simulate` take either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass

from capsim.profiles.hardware import get_hardware
from capsim.sim.errors import SimulationError
from capsim.sim.kv_link import KVLink, default_link, kv_link, shards
from capsim.sim.policies import POLICIES
from capsim.sim.scheduler import SchedulerConfig
from capsim.sim.system import SystemSpec, moe_layout_words

PREFILL_ROUTERS = ("least_tokens", "round_robin")  # fewest prompt tokens still to compute, or in turn
DECODE_ROUTERS = (
    "least_kv",
    "least_outstanding",
    "round_robin",
)  # most free KV (queued counted), fewest requests, or in turn
MAX_INSTANCES = 4096  # instances of a pool: beyond is a typo, not a deployment
SHAPE = re.compile(r"^\s*(\d+)\s*P\s*(\d+)\s*D\s*$", re.IGNORECASE)


def parse_shape(text: str) -> tuple[int, int]:
    """'2P4D' -> (2, 4)."""
    match = SHAPE.match(text)
    if not match or not 1 <= int(match[1]) <= MAX_INSTANCES or not 1 <= int(match[2]) <= MAX_INSTANCES:
        raise SimulationError(
            f"a disaggregated deployment is written xPyD: x prefill and y decode instances, 1 to {MAX_INSTANCES} "
            f"of each (e.g. 2P4D); got {text!r}"
        )
    return int(match[1]), int(match[2])


POOL_OPTIONS = (
    "prefill_tp",
    "decode_tp",
    "prefill_hardware",
    "decode_hardware",
    "prefill_scheduler",
    "decode_scheduler",
    "prefill_chunk_size",
    "decode_max_batch_size",
    "decode_ep",
    "decode_dp_attention",
)


def disaggregate(
    system: SystemSpec,
    shape: str,
    kv_link: str | None = None,
    prefill_router: str | None = None,
    decode_router: str | None = None,
    **pools,
) -> "DisaggSpec":
    """`system` split into xPyD pools: its settings for both, but where POOL_OPTIONS say otherwise."""
    unknown = set(pools) - set(POOL_OPTIONS)
    if unknown:
        raise SimulationError(f"unknown pool settings {', '.join(sorted(unknown))}; known: {', '.join(POOL_OPTIONS)}")
    prefills, decodes = parse_shape(shape)

    def pool(side: str, replicas: int, **more) -> SystemSpec:
        return dataclasses.replace(
            system,
            replicas=replicas,
            tp=pools.get(f"{side}_tp") or system.tp,
            hardware=pools.get(f"{side}_hardware") or system.hardware,
            scheduler=pools.get(f"{side}_scheduler") or system.scheduler,
            ep=pools.get(f"{side}_ep") or system.ep,
            dp_attention=pools.get(f"{side}_dp_attention") or system.dp_attention,
            **more,
        )

    return DisaggSpec(
        pool("prefill", prefills, token_budget=pools.get("prefill_chunk_size") or system.token_budget),
        pool("decode", decodes, max_batch_size=pools.get("decode_max_batch_size") or system.max_batch_size),
        kv_link,
        prefill_router or PREFILL_ROUTERS[0],
        decode_router or DECODE_ROUTERS[0],
    )


@dataclass(frozen=True)
class DisaggSpec:
    prefill: SystemSpec  # one prefill instance; its `replicas` is P
    decode: SystemSpec  # one decode instance; its `replicas` is D
    kv_link: str | None = None  # nvlink | ib | pcie; None: NVLink where both pools fit one NVLink domain, else ib
    prefill_router: str = PREFILL_ROUTERS[0]  # which prefill instance a request goes to
    decode_router: str = DECODE_ROUTERS[0]  # which decode instance a prefilled request goes to

    def __post_init__(self):
        p, d = self.prefill, self.decode
        if p.model != d.model:
            raise SimulationError(
                f"the prefill pool serves {p.model} and the decode pool {d.model}: both must serve one model"
            )
        for pool, spec in (("prefill", p), ("decode", d)):
            if spec.pp != 1:
                raise SimulationError(
                    f"the {pool} pool has PP={spec.pp}: disaggregated pools are modelled with TP only"
                )
            if spec.spec_tokens:
                raise SimulationError(
                    "speculative decoding is not modelled in disaggregated pools: drop --spec-tokens, or --disagg"
                )
            if spec.prefix_caching:
                raise SimulationError("prefix caching is not modelled in disaggregated pools: drop --prefix-caching")
            if not POLICIES[spec.scheduler].serves_a_disaggregated_pool:
                raise SimulationError(
                    f"{spec.scheduler} batches whole requests and cannot split prefill from decode: "
                    "choose another scheduler for the pools"
                )
        if self.prefill_router not in PREFILL_ROUTERS:
            raise SimulationError(
                f"unknown prefill router {self.prefill_router!r}; choose one of {', '.join(PREFILL_ROUTERS)}"
            )
        if self.decode_router not in DECODE_ROUTERS:
            raise SimulationError(
                f"unknown decode router {self.decode_router!r}; choose one of {', '.join(DECODE_ROUTERS)}"
            )
        if p.model_len != d.model_len:
            raise SimulationError(f"the pools differ in max model length ({p.model_len} and {d.model_len}): give one")
        if self.kv_link is None:
            object.__setattr__(
                self, "kv_link", default_link(get_hardware(p.hardware), get_hardware(d.hardware), self.gpus)
            )
        self.link()  # refuse a link the pools cannot have now, not in a worker

    # ---- what it is -----------------------------------------------------------------------------

    @property
    def shape(self) -> str:
        return f"{self.prefill.replicas}P{self.decode.replicas}D"

    @property
    def gpus(self) -> int:
        p, d = self.prefill, self.decode
        return p.replicas * p.gpus_per_replica + d.replicas * d.gpus_per_replica

    @property
    def model(self) -> str:
        return self.prefill.model

    def _pools(self, field: str) -> str:
        """The pools' value of `field`, or both, named, where they differ."""
        p, d = getattr(self.prefill, field), getattr(self.decode, field)
        return p if p == d else f"{p} (prefill), {d} (decode)"

    hardware = property(lambda self: self._pools("hardware"))
    engine = property(lambda self: self._pools("engine"))
    scheduler = property(lambda self: self._pools("scheduler"))

    @property
    def tp(self) -> str:
        return f"{self.prefill.tp}/{self.decode.tp}"

    pp = 1

    @property
    def model_len(self) -> int:
        return self.prefill.model_len

    @property
    def parallel_label(self) -> str:
        layouts = [
            f"_tp{pool.tp}"
            + (f"_dp{pool.dp_attention}" if pool.dp_attention > 1 else "")
            + (f"_ep{pool.ep}" if pool.ep > 1 else "")
            for pool in (self.prefill, self.decode)
        ]
        return self.shape + "".join(layouts)

    def with_pools(self, **changes) -> "DisaggSpec":
        """The same deployment with `changes` made to both pools (what a config override does)."""
        for name in ("replicas", "router", "pipeline_scheduling"):
            if name in changes:
                raise SimulationError(
                    f"{name.replace('_', ' ')} does not apply to a disaggregated deployment, whose xPyD gives "
                    "the instances"
                )
        prefill, decode = dataclasses.replace(self.prefill, **changes), dataclasses.replace(self.decode, **changes)
        # a link that was the default follows the new pools (their GPU kind, their count)
        defaulted = self.kv_link == default_link(
            get_hardware(self.prefill.hardware), get_hardware(self.decode.hardware), self.gpus
        )
        return dataclasses.replace(self, prefill=prefill, decode=decode, kv_link=None if defaulted else self.kv_link)

    def link(self) -> KVLink:
        model = self.prefill.model_spec
        return kv_link(
            self.kv_link,
            model,
            get_hardware(self.prefill.hardware),
            get_hardware(self.decode.hardware),
            shards(model, self.prefill.tp, 1),
            shards(model, self.decode.tp, 1),
            self.gpus,
        )

    def scheduler_config(self) -> SchedulerConfig:
        """Both pools' limits must hold (the model fits each GPU); the decode pool's, which keeps requests longest."""
        self.prefill.scheduler_config()
        return self.decode.scheduler_config()

    def latency_model(self) -> "PoolLatencies":
        return PoolLatencies(self.prefill.latency_model(), self.decode.latency_model())

    def words(self) -> str:
        return describe(self.to_dict())

    def to_dict(self) -> dict:
        p, d = self.prefill, self.decode
        return {
            "disagg": self.shape,
            "kv_link": self.kv_link,
            "prefill_router": self.prefill_router,
            "decode_router": self.decode_router,
            "gpus": self.gpus,
            "prefill": p.to_dict(),
            "decode": d.to_dict(),
            # what reports read of an aggregated system, for the whole deployment
            "model": self.model,
            "hardware": self.hardware,
            "tp": self.tp,
            "pp": 1,
            "replicas": p.replicas + d.replicas,
            "scheduler": self.scheduler,
            "engine": self.engine,
            "token_budget": p.token_budget,
            "max_batch_size": d.max_batch_size,
        }


def describe(system: dict) -> str:
    """'2P4D: prefill 2 x H100-SXM TP1 sarathi chunk 512, decode 4 x H100-SXM TP2 sarathi batch 128, KV over nvlink'."""
    p, d = system["prefill"], system["decode"]
    chosen = [
        f"{side} router {system[f'{side}_router']}"
        for side, default in (("prefill", PREFILL_ROUTERS[0]), ("decode", DECODE_ROUTERS[0]))
        if system.get(f"{side}_router", default) != default
    ]
    routers = f" ({', '.join(chosen)})" if chosen else ""
    budget = p.get("token_budget") or POLICIES[p["scheduler"]].default_budget
    chunk = f" chunk {budget}" if budget else ""
    return (
        f"{system['disagg']}: prefill {p['replicas']} x {p['hardware']} TP{p['tp']}{moe_layout_words(p)} "
        f"{p['scheduler']}{chunk} batch {p['max_batch_size']}, "
        f"decode {d['replicas']} x {d['hardware']} TP{d['tp']}{moe_layout_words(d)} {d['scheduler']} batch "
        f"{d['max_batch_size']}, KV over "
        f"{system['kv_link']}" + routers
    )


class PoolLatencies:
    """The two pools' latency models, as the search and the result read one."""

    def __init__(self, prefill, decode):
        self.prefill, self.decode = prefill, decode
        self.source = (
            prefill.source
            if prefill.source == decode.source
            else f"{prefill.source} (prefill), {decode.source} (decode)"
        )
        words = (prefill.source_words, decode.source_words)
        self.source_words = words[0] if words[0] == words[1] else f"prefill: {words[0]}; decode: {words[1]}"
        self.profile = prefill.profile | {"tp": f"{prefill.profile['tp']}/{decode.profile['tp']}"}
        hashes = (getattr(prefill, "profile_hash", ""), getattr(decode, "profile_hash", ""))
        self.profile_hash = hashlib.sha256("/".join(hashes).encode()).hexdigest()[:24]
        self.predictor = decode.predictor  # one decode step: what a TBT limit is checked against

    def extrapolation(self, features, weights=None):
        return None  # each pool's batches are checked against its own model (disagg_sim.simulate_disagg)
