"""The link that moves a request's KV cache from a prefill instance to a decode instance.

A transfer costs a fixed latency plus the prompt's KV bytes over the lanes that run in parallel:
each GPU sends its own shard (its KV heads, its layers) over its own link, so the lanes are the
shards of the side with fewer of them (KV heads replicated past TP = KV heads are sent once).
Bandwidths are one way, per GPU, from the hardware catalog:
- nvlink: the NVLink fabric (both pools inside one NVLink domain: an HGX board, an NVL72 rack);
- ib: each GPU's RDMA NIC (InfiniBand or RoCE), across nodes;
- pcie: GPU to GPU through the host's PCIe switches, inside one node.
The fixed latencies are a transfer's set-up (descriptors, RDMA handshake), not the wire alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from capsim.profiles.hardware import HardwareSpec
from capsim.profiles.models import ModelSpec
from capsim.sim.errors import SimulationError

LINKS = ("nvlink", "ib", "pcie")
SETUP_SECONDS = {"nvlink": 10e-6, "ib": 30e-6, "pcie": 20e-6}
WORDS = {"nvlink": "NVLink", "ib": "InfiniBand/RoCE NICs", "pcie": "PCIe"}


@dataclass(frozen=True)
class KVLink:
    kind: str
    lane_bandwidth: float  # bytes/s one way, one GPU
    lanes: int  # GPUs sending at once
    latency: float  # seconds a transfer, whatever its size
    bytes_per_token: int  # the prompt's KV, all layers and KV heads

    def seconds(self, tokens: int) -> float:
        return self.latency + tokens * self.bytes_per_token / (self.lane_bandwidth * self.lanes)

    def words(self) -> str:
        return (
            f"{WORDS[self.kind]}, {self.lanes} x {self.lane_bandwidth / 1e9:g} GB/s, "
            f"{self.latency * 1e6:g} us a transfer, {self.bytes_per_token / 1024:g} KiB of KV a token"
        )


def shards(model: ModelSpec, tp: int, pp: int) -> int:
    """GPUs holding distinct parts of one instance's (one attention-DP rank's) KV cache: MLA's one
    latent is the same on every TP rank."""
    return (1 if model.is_mla else min(tp, model.kv_heads)) * pp


def default_link(prefill: HardwareSpec, decode: HardwareSpec, gpus: int) -> str:
    """NVLink where both pools fit one NVLink domain, else the NICs."""
    same = prefill.name == decode.name
    return "nvlink" if same and prefill.nvlink_domain and gpus <= prefill.nvlink_domain else "ib"


def kv_link(
    kind: str,
    model: ModelSpec,
    prefill: HardwareSpec,
    decode: HardwareSpec,
    prefill_shards: int,
    decode_shards: int,
    gpus: int,
) -> KVLink:
    if kind not in LINKS:
        raise SimulationError(f"unknown KV link {kind!r}; choose one of {', '.join(LINKS)}")
    if kind in ("nvlink", "pcie") and prefill.name != decode.name:
        raise SimulationError(
            f"{WORDS[kind]} joins GPUs of one server, and the pools are on {prefill.name} and {decode.name}: "
            "use --kv-link ib"
        )
    if kind == "nvlink" and not prefill.nvlink_domain:
        raise SimulationError(f"{prefill.name} has no NVLink ({prefill.interconnect}): use --kv-link pcie or ib")
    if kind == "nvlink" and gpus > prefill.nvlink_domain:
        raise SimulationError(
            f"the pools take {gpus} GPUs and one NVLink domain of {prefill.name} joins {prefill.nvlink_domain}: "
            "use --kv-link ib, or fewer instances"
        )
    if kind == "pcie" and gpus > 8:
        raise SimulationError(f"the pools take {gpus} GPUs, more than one PCIe server holds (8): use --kv-link ib")
    bandwidth = {
        "nvlink": lambda h: h.tp_link_bandwidth,
        "ib": lambda h: h.nic_bandwidth,
        "pcie": lambda h: h.host_link_bandwidth,
    }[kind]
    return KVLink(
        kind,
        min(bandwidth(prefill), bandwidth(decode)),
        min(prefill_shards, decode_shards),
        SETUP_SECONDS[kind],
        model.kv_bytes_per_token,
    )
