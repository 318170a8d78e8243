"""Host time: what a serving engine spends outside its kernels, per engine (and version).

Kernel-database step times are GPU kernels only; a real engine also schedules, prepares inputs,
samples and detokenizes on the CPU, and its API server tokenizes and streams. capsim adds three
terms, fitted on real closed-loop runs (scripts/fit_host_time.py, data in host_time.json):
- step_s: every batch (scheduling, input preparation, launch gaps);
- per_sequence_s: each sequence in a batch (sampling, output processing);
- frontend_s: each request in the replica's API server (HTTP, tokenization), which takes one
  at a time (sim/simulator.py, Frontend): requests sent together reach the engine spread out.
Time after the last token (detokenizing, closing the stream) is not modelled: TTFT and TPOT alone
cannot tell it apart from the step terms. The terms apply to latency sources without host time (the
kernel database, and the roofline calibrated to it); a measured profile already holds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from capsim.profiles.errors import ProfileError

HOST_TIME_FILE = "host_time.json"
SOURCES_WITHOUT_HOST_TIME = ("kernel-db", "analytic")
ENGINE_WORDS = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM"}


@dataclass(frozen=True)
class HostTime:
    engine: str
    step_s: float
    per_sequence_s: float
    frontend_s: float
    provenance: str  # what it was fitted on, in words

    @property
    def words(self) -> str:
        return (
            f"{ENGINE_WORDS.get(self.engine, self.engine)} host time {self.step_s * 1e3:.2f} ms a step + "
            f"{self.per_sequence_s * 1e6:.0f} us a sequence + {self.frontend_s * 1e3:.2f} ms a request in the frontend "
            f"({self.provenance})"
        )

    def overlapped(self) -> HostTime:
        """Under asynchronous scheduling (vLLM's --async-scheduling) the CPU prepares the next step
        while the GPU runs this one: the step and sequence terms hide behind the kernels."""
        return HostTime(
            self.engine, 0.0, 0.0, self.frontend_s, self.provenance + "; per-step terms hidden by async scheduling"
        )

    def to_dict(self) -> dict:
        return {
            "engine": self.engine,
            "step_s": self.step_s,
            "per_sequence_s": self.per_sequence_s,
            "frontend_s": self.frontend_s,
            "provenance": self.provenance,
        }


@lru_cache(maxsize=1)
def _shipped() -> dict:
    path = resources.files("capsim.profiles").joinpath("data", HOST_TIME_FILE)
    if not path.is_file():
        return {"engines": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def host_time(engine: str) -> HostTime | None:
    """The shipped host time of an engine, or None where capsim has none (the reference engine)."""
    entry = _shipped()["engines"].get(engine)
    if entry is None:
        return None
    try:
        return HostTime(
            engine,
            float(entry["step_s"]),
            float(entry["per_sequence_s"]),
            float(entry["frontend_s"]),
            str(entry["provenance"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ProfileError(
            f"profiles/data/{HOST_TIME_FILE}: the {engine} entry is damaged ({error}); reinstall capsim"
        ) from None


def training_rows() -> set[str]:
    """The ids of the real runs the shipped host times were fitted on."""
    return {row for entry in _shipped()["engines"].values() for row in entry.get("training_rows", ())}
