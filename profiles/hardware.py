"""The hardware catalog: what a roofline needs to know about a GPU (datasheet figures, dense)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from capsim.profiles.errors import ProfileError

GB = 1e9
GIB = 1 << 30


@dataclass(frozen=True)
class HardwareSpec:
    name: str
    bf16_flops: float  # peak dense bf16/fp16 tensor FLOP/s
    memory_bandwidth: float  # bytes/s
    memory_bytes: int
    tp_link_bandwidth: float  # bytes/s one way per GPU, between GPUs of one tensor-parallel group
    tp_link_latency: float  # seconds per collective step
    pp_link_bandwidth: float  # bytes/s one way, between pipeline stages
    interconnect: str  # what the links are, in words
    # Links that move a request's KV cache between instances (disaggregated serving), one way per GPU:
    nic_bandwidth: float = (
        50 * GB
    )  # its own RDMA NIC (InfiniBand/RoCE): 400 Gb/s ConnectX-7 in DGX/HGX H100, H200, B200
    host_link_bandwidth: float = 50 * GB  # PCIe to the host and its peers (Gen5 x16; Gen4: 25 GB/s)
    nvlink_domain: int = 8  # GPUs one NVLink fabric joins (an HGX board; 72 in an NVL72 rack; 0: PCIe card)

    @property
    def has_fp8(self) -> bool:
        """FP8 tensor cores: Hopper, Ada and Blackwell; not Ampere, not a CPU."""
        return self.name in FP8_GPUS

    @property
    def has_fp4(self) -> bool:
        """FP4 (NVFP4) tensor cores: Blackwell only."""
        return self.name in FP4_GPUS

    def to_dict(self) -> dict:
        return asdict(self)


FP4_GPUS = ("B200", "GB200", "B300", "GB300", "RTX-PRO-6000")
FP8_GPUS = ("H100-SXM", "H100-PCIe", "H200", "L40S", "B200", "GB200", "B300", "GB300", "RTX-PRO-6000")
_NVLINK3 = dict(
    tp_link_bandwidth=300 * GB, tp_link_latency=8e-6, pp_link_bandwidth=300 * GB, interconnect="NVLink 3 (600 GB/s)"
)
_NVLINK4 = dict(
    tp_link_bandwidth=450 * GB, tp_link_latency=6e-6, pp_link_bandwidth=450 * GB, interconnect="NVLink 4 (900 GB/s)"
)
_NVLINK5 = dict(
    tp_link_bandwidth=900 * GB, tp_link_latency=5e-6, pp_link_bandwidth=900 * GB, interconnect="NVLink 5 (1.8 TB/s)"
)
_PCIE4 = dict(
    tp_link_bandwidth=25 * GB,
    tp_link_latency=15e-6,
    pp_link_bandwidth=25 * GB,
    interconnect="PCIe Gen4 x16",
    nic_bandwidth=25 * GB,
    host_link_bandwidth=25 * GB,
    nvlink_domain=0,
)
_PCIE5 = dict(
    tp_link_bandwidth=50 * GB,
    tp_link_latency=12e-6,
    pp_link_bandwidth=50 * GB,
    interconnect="PCIe Gen5 x16",
    nvlink_domain=0,
)
_HDR = dict(nic_bandwidth=25 * GB, host_link_bandwidth=25 * GB)  # DGX A100: 200 Gb/s HDR a GPU, PCIe Gen4
_XDR = dict(nic_bandwidth=100 * GB)  # 800 Gb/s ConnectX-8 a GPU (B300, GB300)

HARDWARE: dict[str, HardwareSpec] = {
    h.name: h
    for h in (
        HardwareSpec("A100-80GB-SXM", 312e12, 2.039e12, 80 * GIB, **_NVLINK3, **_HDR),
        HardwareSpec("A100-80GB-PCIe", 312e12, 1.935e12, 80 * GIB, **_PCIE4),
        HardwareSpec("A40", 149.7e12, 0.696e12, 48 * GIB, **_PCIE4),
        HardwareSpec("H100-SXM", 989e12, 3.35e12, 80 * GIB, **_NVLINK4),
        HardwareSpec("H100-PCIe", 756e12, 2.0e12, 80 * GIB, **_PCIE5),
        HardwareSpec("H200", 989e12, 4.8e12, 141 * GIB, **_NVLINK4),
        HardwareSpec("L40S", 362e12, 0.864e12, 48 * GIB, **_PCIE4),
        # Blackwell: dense bf16 peaks and HBM3e figures of NVIDIA's datasheets (DGX B200/B300, GB200/GB300 NVL72).
        HardwareSpec("B200", 2250e12, 8.0e12, 180 * GIB, **_NVLINK5),
        HardwareSpec("GB200", 2500e12, 8.0e12, 186 * GIB, **_NVLINK5, nvlink_domain=72),
        HardwareSpec("B300", 2250e12, 8.0e12, 270 * GIB, **_NVLINK5, **_XDR),
        HardwareSpec("GB300", 2500e12, 8.0e12, 279 * GIB, **_NVLINK5, **_XDR, nvlink_domain=72),
        HardwareSpec("RTX-PRO-6000", 504e12, 1.6e12, 96 * GIB, **_PCIE5),
        # A small server CPU core pair: rough figures, for estimates of the `tiny` model only.
        HardwareSpec("cpu", 0.2e12, 20 * GB, 16 * GIB, 10 * GB, 5e-6, 10 * GB, "shared memory", 10 * GB, 10 * GB, 0),
    )
}
ALIASES = {
    "A100": "A100-80GB-SXM",
    "A100-80GB": "A100-80GB-SXM",
    "A100-SXM": "A100-80GB-SXM",
    "A100-PCIe": "A100-80GB-PCIe",
    "H100": "H100-SXM",
    "H100-80GB": "H100-SXM",
    "H200-SXM": "H200",
    "B200-SXM": "B200",
    "B300-SXM": "B300",
    "RTX-PRO-6000-Server": "RTX-PRO-6000",
}


def get_hardware(name: str) -> HardwareSpec:
    by_lower = {k.lower(): k for k in HARDWARE} | {k.lower(): v for k, v in ALIASES.items()}
    if name.lower() not in by_lower:
        raise ProfileError(
            f"unknown hardware {name!r}; known hardware: {', '.join(HARDWARE)} (aliases: {', '.join(ALIASES)})"
        )
    return HARDWARE[by_lower[name.lower()]]
