"""SimPy replay of scheduler policies over workloads: replicas, KV-cache memory, routing, metrics."""

from capsim.sim.disagg import DisaggSpec
from capsim.sim.errors import SimulationError
from capsim.sim.policies import POLICIES
from capsim.sim.result import RunResult
from capsim.sim.simulator import simulate
from capsim.sim.system import ROUTERS, SystemSpec

__all__ = ["DisaggSpec", "POLICIES", "ROUTERS", "RunResult", "SimulationError", "SystemSpec", "simulate"]
