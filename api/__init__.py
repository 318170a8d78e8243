"""capsim: the capacity of an LLM serving deployment, found in simulation and confirmed on real engines.

`import capsim` gives the Python API (capsearch/api.py): simulate, search, sweep, plan,
validate, and the specs they take (SystemSpec, DisaggSpec, WorkloadSpec, the SLO kinds). Names
load on first use, so `import capsim.sim` stays as light as before. The layers are subpackages:
capsim.traces, capsim.profiles, capsim.sim, capsim.real, capsim.capsearch.
"""

from importlib import import_module

__all__ = [
    "Deadline",
    "DisaggSpec",
    "Goodput",
    "SystemSpec",
    "TbtTtft",
    "TtftTpot",
    "WorkloadSpec",
    "plan",
    "search",
    "simulate",
    "sweep",
    "validate",
]


def __getattr__(name: str):
    if name == "__version__":  # looked up on first use: importlib.metadata costs every command 50 ms
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("capsim")
        except PackageNotFoundError:  # run from a source tree that is not installed
            value = "0+unknown"
        globals()[name] = value
        return value
    if name in __all__:
        value = getattr(import_module("capsim.capsearch.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'capsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
