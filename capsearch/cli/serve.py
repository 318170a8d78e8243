"""`capsim serve`: the reference engine behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import os

import click
from click.core import ParameterSource

from capsim.capsearch.cli.options.engine import DTYPE, HOST, device, port
from capsim.capsearch.cli.options.system import system_options
from capsim.real.reference import engine_system
from capsim.real.reference import serve as serve_engine


@click.command()
@system_options(default_engine="reference")
@device("cpu")
@DTYPE
@HOST
@port(lowest=0)
@click.option("--api-key", default=None, help="Require this bearer token [default: $CAPSIM_API_KEY, else none].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option(
    "--batch-log",
    type=click.Path(dir_okay=False),
    default=None,
    help="At shutdown, write every batch the engine ran (composition, start, end) to this Parquet file.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    system,
    device: str,
    dtype: str | None,
    host: str,
    port: int,
    api_key: str | None,
    seed: int,
    batch_log: str | None,
) -> None:
    """Serve a catalog model with capsim's reference engine.

    A continuous-batching engine in torch: the model's architecture with random weights (nothing
    is downloaded), a paged KV cache, and the simulator's own scheduler policy deciding every
    batch on the wall clock. It speaks the OpenAI completions API as vLLM does (streaming,
    token-id prompts, ignore_eos, usage), so `capsim confirm` and `capsim profile --endpoint`
    drive it exactly as they drive vLLM. Stops cleanly on Ctrl-C or SIGTERM.
    """
    if system.engine != "reference":
        raise click.UsageError(
            f"capsim serve runs capsim's reference engine, not {system.engine}: drop --engine "
            f"(`capsim vllm-command` prints the vLLM command)"
        )
    if device == "cpu" and ctx.get_parameter_source("hardware") == ParameterSource.DEFAULT:
        from dataclasses import replace

        system = replace(system, hardware="cpu")
    key = api_key if api_key is not None else os.environ.get("CAPSIM_API_KEY")
    if key is not None and not key.strip():
        raise click.UsageError(
            "--api-key (or $CAPSIM_API_KEY) is empty: give a key, or leave it out to serve without one"
        )
    if key is not None and not key.isascii():
        raise click.UsageError("--api-key must be ASCII text: HTTP headers carry no other")
    system = engine_system(system, device, dtype)
    config = system.scheduler_config()

    def ready(server):
        budget = f", token budget {config.token_budget}" if config.token_budget else ""
        click.echo(
            f"capsim serve: {system.model} on {device}, {system.scheduler} (batch {config.max_batch_size}{budget}), "
            f"{config.num_blocks} KV blocks of {config.block_size}, max model length {config.max_model_len}",
            err=True,
        )
        click.echo(f"listening on {server.url}" + ("" if key else "; no API key: every client is served"), err=True)

    serve_engine(system, device, dtype, host, port, key, seed, on_ready=ready, batch_log=batch_log)
