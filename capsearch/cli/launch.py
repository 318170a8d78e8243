"""`capsim launch`: how to run a deployment on a real engine: its launch command (vLLM, SGLang,
TensorRT-LLM) or a Kubernetes manifest, from the same deployment flags as a simulation
(real/launch.py has the mapping)."""

from __future__ import annotations

import click

from capsim.capsearch.cli.options.engine import port
from capsim.capsearch.cli.options.system import system_options
from capsim.real.launch import ENGINE_VERSIONS, kubernetes_manifests, launch, llmd_values, manifest_text

FORMATS = ("shell", "kubernetes", "llm-d")


@click.command(
    "launch",
    help=f"""Print how to run a deployment on its engine (--engine): a shell script (the launch command of
    one replica, with any options file it reads), a Kubernetes manifest (a Deployment of --replicas pods
    with their GPUs, and a Service), or values for llm-d's ModelService Helm chart (vLLM).

    Flags are those of {", ".join(ENGINE_VERSIONS.values())}; every deployment field the simulation used
    is passed to the engine (layout, batch limit, token budget, model length, KV block size and tokens,
    precision, prefix caching, speculative decoding), or the launch is refused with the reason.""",
)
@system_options
@port()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address the engine serves on.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    default="shell",
    show_default=True,
    help="What to print: a shell script, a Kubernetes manifest, or llm-d ModelService values.",
)
@click.option(
    "--dummy-weights/--real-weights",
    default=False,
    show_default=True,
    help="Random weights (the engines' --load-format dummy), to measure latency without downloading the model.",
)
def launch_command(system, port: int, host: str, format_: str, dummy_weights: bool) -> None:
    if format_ == "shell":
        click.echo(launch(system, port, host, dummy_weights).shell(), nl=False)
    elif format_ == "kubernetes":
        if host != "0.0.0.0":
            raise click.UsageError(
                "--host: a pod serves on 0.0.0.0 for its Service; drop --host with --format kubernetes"
            )
        click.echo(manifest_text(kubernetes_manifests(system, port, dummy_weights)), nl=False)
    else:
        if (host, port) != ("0.0.0.0", 8000):
            raise click.UsageError("--host and --port are the chart's own (routing.servicePort): drop them with llm-d")
        click.echo(manifest_text([llmd_values(system, dummy_weights)]), nl=False)
