"""`capsim confirm` (a simulated capacity checked on a real engine) and `capsim vllm-command`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console

from capsim.capsearch.capacity.confirm import (
    at_engine_speed,
    predict_capacity,
)
from capsim.capsearch.capacity.confirm import (
    confirm as run_confirmation,
)
from capsim.capsearch.cli.options.engine import DTYPE, HOST, device, endpoint, port
from capsim.capsearch.cli.options.run import API_KEY, output_options
from capsim.capsearch.cli.options.search import EARLY_STOP, START_QPS
from capsim.capsearch.cli.options.slo import slo_options
from capsim.capsearch.cli.options.system import option_given, system_options
from capsim.capsearch.cli.options.workload import TRACE, workload_options
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.experiments.slo_flags import flag_convention, slos_from_flags
from capsim.capsearch.report.confirm import confirmation_tables, plot_confirmation, write_confirmation
from capsim.capsearch.report.results_dir import ResultSet, results_dir
from capsim.profiles.errors import ProfileError
from capsim.profiles.models import get_model
from capsim.real.client import check_completions, connect
from capsim.real.loadgen import prompt_ids
from capsim.real.process import free_port
from capsim.real.reference import engine_system, reference_server
from capsim.real.vllm import VLLM_VERSIONS, vllm_command, vllm_server

console = Console(width=None if sys.stdout.isatty() else 120)
CONFIRM_REQUESTS = 512  # a confirmation trial's requests unless -n says otherwise: fewer than a search's
BATCH_LOG = "batches.parquet"  # every batch the reference engine ran, written when it stops


@click.command()
@system_options(default_engine="reference")
@TRACE
@workload_options
@slo_options
@endpoint("one already serving the system, instead of one capsim starts")
@device("cpu")
@DTYPE
@click.option(
    "--predicted-qps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="The capacity to confirm [default: search it in simulation now, with the same workload and SLO].",
)
@START_QPS
@click.option("--max-trials", type=click.IntRange(1, 8), default=4, show_default=True, help="Real trials at most.")
@click.option(
    "--step",
    type=click.FloatRange(min=0, min_open=True),
    default=0.2,
    show_default=True,
    help="Move the QPS by this factor (1 + step) until the bracket holds a pass and a fail.",
)
@click.option(
    "--trial-time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds a real trial may run [default: its arrivals plus as long again, at least 2 minutes].",
)
@EARLY_STOP
@click.option(
    "--max-in-flight",
    type=click.IntRange(1, 2**31 - 1),
    default=1024,
    show_default=True,
    help="Safety cap on open requests; a request it delays is counted and reported.",
)
@API_KEY
@output_options("confirm")
@click.pass_context
def confirm(
    ctx: click.Context,
    system,
    trace: str,
    make_spec,
    endpoint: str | None,
    device: str,
    dtype: str | None,
    predicted_qps: float | None,
    start_qps: float,
    max_trials: int,
    step: float,
    trial_time_limit: float | None,
    early_stop: bool,
    max_in_flight: int,
    api_key: str | None,
    output_dir: Path | None,
    overwrite: bool,
    **slo_flags,
) -> None:
    """Confirm a simulated capacity on a real engine.

    Runs a short bracketed binary search on the engine, starting at the predicted capacity (at
    most --max-trials trials of the same workload, fewer requests than a search), and reports
    predicted vs measured capacity and the TTFT/TBT percentile errors at the measured point:
    a table, confirm.json and confirm.png, plus every real trial's requests.parquet.

    --engine names the engine being confirmed, and so whose latencies predict it. Without
    --endpoint capsim starts it: its reference engine (random weights, the simulator's own
    scheduler) on --device, or vLLM with --engine vllm; SGLang and TRT-LLM need --endpoint.
    """
    engine_kind = system.engine
    if endpoint is None and engine_kind not in ("reference", "vllm"):
        raise ConfigError(
            f"capsim starts the reference engine or vLLM itself; for {engine_kind} give --endpoint of a running server"
        )
    given = option_given
    convention = slo_flags.get("slo_defaults") or flag_convention(slo_flags, given) or "capsim"
    slos = slos_from_flags(slo_flags, convention)
    if len(slos) != 1:
        raise ConfigError("confirm checks one SLO at a time: give one --tbt-slo")
    slo = slos[0]
    if ctx.get_parameter_source("num_requests") == ParameterSource.DEFAULT:
        make_spec = _with_requests(make_spec, CONFIRM_REQUESTS)
    if engine_kind == "reference" and endpoint is None:
        system = engine_system(system, device, dtype)
    workload = make_spec(trace)
    requests = workload.requests()
    if int((requests.prompt_tokens + requests.output_tokens > system.model_len).sum()):
        raise ConfigError(
            f"some requests of {trace} are longer than the max model length {system.model_len}: "
            f"pass --max-total-tokens {system.model_len}"
        )
    folder = results_dir(output_dir, "confirm", overwrite)
    outcome, settled = "given (--predicted-qps)", True
    if predicted_qps is None:
        with console.status("searching the capacity in simulation"):
            predicted = predict_capacity(system, workload, slo, start_qps)
        if not predicted.capacity_qps:
            raise ConfigError(
                "no simulated QPS meets the SLO: nothing to confirm (check the SLO against `capsim search`)"
            )
        predicted_qps, outcome, settled = (
            predicted.capacity_qps,
            f"simulated search: {predicted.outcome}",
            predicted.converged,
        )
    colour = "" if settled else "[yellow]"  # a capacity the search did not pin down
    console.print(f"{colour}predicted capacity {predicted_qps:.3g} QPS for {slo.observable().name} ({outcome})")
    with ResultSet(folder, keep_on_failure=("engine.log",)) as staging:
        confirmation, results = confirm_on_engine(
            system,
            workload,
            slo,
            endpoint,
            api_key,
            device,
            dtype,
            predicted_qps,
            step,
            max_trials,
            trial_time_limit,
            early_stop,
            max_in_flight,
            staging,
            outcome,
        )
        if (staging / BATCH_LOG).is_file():  # the reference engine started here logged its batches
            with console.status("predicting again at the engine's measured step times"):
                confirmation.engine_speed = at_engine_speed(
                    system, workload, slo, staging / BATCH_LOG, staging, start_qps
                )
        for qps, result in results.items():
            result.write(staging / "trials" / f"qps_{qps:.4g}")
        write_confirmation(confirmation, staging)
        plot_confirmation(confirmation, staging / "confirm.png")
    for table in confirmation_tables(confirmation):
        console.print(table)
    for note in confirmation.notes:
        console.print(f"[dim]{note}[/]")
    console.print(f"[dim]the prediction's latencies: {confirmation.latency_source}[/]")
    written = ["confirm.json", "confirm.png", "trials/"] + (["engine.log"] if endpoint is None else [])
    if confirmation.engine_speed:
        written += [BATCH_LOG, confirmation.engine_speed["profile"]]
    console.print(f"wrote {folder}/: {', '.join(written)}")


def confirm_on_engine(
    system,
    workload,
    slo,
    endpoint,
    api_key,
    device,
    dtype,
    predicted_qps,
    step,
    max_trials,
    trial_time_limit,
    early_stop,
    max_in_flight,
    folder: Path,
    predicted_outcome: str,
):
    """The real trials: on the endpoint given, or on an engine started here (its log in folder)."""
    launcher = None
    if endpoint is None:
        port = free_port()
        log = folder / "engine.log"
        launcher = (
            reference_server(system, port, str(log), device, dtype, batch_log=str(folder / BATCH_LOG))
            if system.engine == "reference"
            else vllm_server(system, port, str(log), device=device, dtype=dtype)
        )
        with console.status(f"starting the {system.engine} engine"):
            launcher.start()
        endpoint = launcher.url
    try:
        target = connect(endpoint, api_key, serves=lambda name: serves_model(name, system.model))
        check_completions(target, prompt_ids(workload.seed, 0, 8, get_model(system.model).vocab))
        with console.status("confirming on the real engine") as status:

            def on_trial(qps, passed):
                status.update(f"confirming on the real engine: {qps:.3g} QPS {'passed' if passed else 'failed'}")
                console.print(f"  real trial at {qps:.3g} QPS: {'pass' if passed else 'fail'}")

            return run_confirmation(
                system,
                workload,
                slo,
                target,
                predicted_qps,
                get_model(system.model).vocab,
                step,
                max_trials,
                trial_time_limit,
                early_stop,
                on_trial,
                max_in_flight=max_in_flight,
                predicted_outcome=predicted_outcome,
            )
    finally:
        if launcher is not None:
            launcher.stop()


def serves_model(served: str, model: str) -> bool:
    """Whether a served model name (a Hugging Face id, a path, an alias) is the catalog's model."""
    try:
        return get_model(served).name == model
    except ProfileError:
        return served.rstrip("/").rsplit("/", 1)[-1].lower() == model.lower()


def _with_requests(make_spec, count: int):
    import dataclasses

    return lambda trace: dataclasses.replace(make_spec(trace), num_requests=count)


@click.command(
    "vllm-command",
    help=f"""Print the `vllm serve` command that runs a capsim deployment.

    Maps model, TP/PP, scheduler (vllm_v0: no chunked prefill, on the V0 engine; sarathi: chunked
    prefill with the chunk as the token budget; vllm_v1: vLLM's default engine), batch size, max
    model length, block size and KV blocks to vLLM flags. Written for vLLM {VLLM_VERSIONS}.""",
)
@system_options
@port()
@HOST
@click.option("--real-weights", is_flag=True, help="Load the model's weights instead of --load-format dummy.")
@device("cuda", choices=("cuda", "cpu"))
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("capsim-models"),
    show_default=True,
    help="--device cpu: where the model folder is made.",
)
def vllm_command_cli(system, port: int, host: str, real_weights: bool, device: str, model_dir: Path) -> None:
    if system.engine != "vllm":
        raise click.UsageError(f"vllm-command prints a vLLM command; --engine {system.engine} does not apply")
    if system.pipeline_scheduling != "virtual_engines" and system.pp > 1 and option_given("pipeline_scheduling"):
        raise click.UsageError(
            "vLLM schedules pipeline stages as virtual engines: --pipeline-scheduling one_scheduler has no vLLM flag"
        )
    folder = None
    if device != "cpu" and option_given("model_dir"):
        raise click.UsageError(
            "--model-dir is where --device cpu makes its model folder; vLLM on a GPU loads the model by its id"
        )
    if device == "cpu":
        from capsim.real.model_folder import model_folder
        from capsim.real.vllm import check_cpu_system

        if real_weights:
            raise click.UsageError(
                "--device cpu serves a model folder made here, with random weights: drop --real-weights"
            )
        check_cpu_system(system)
        folder = str(model_folder(get_model(system.model), model_dir).resolve())
        click.echo(f"made the model folder {folder}", err=True)  # stdout stays the command alone
    argv, environment = vllm_command(
        system, port, host, dummy_weights=not real_weights, device=device, model_dir=folder
    )
    click.echo(" ".join([*(f"{k}={v}" for k, v in environment.items()), shlex.join(argv)]))
