"""`capsim profile` (measure a model's batch latencies) and `capsim profiles` (inspect and fit them)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from capsim.capsearch.cli.options.engine import DTYPE, device, endpoint
from capsim.capsearch.cli.options.run import API_KEY, output_options
from capsim.capsearch.report.results_dir import ResultSet, new_file, results_dir, write_json
from capsim.profiles.compare import compare_profiles, split_words
from capsim.profiles.errors import ProfileError
from capsim.profiles.grid import GRIDS
from capsim.profiles.hardware import HARDWARE, get_hardware
from capsim.profiles.latency_model import LatencyModel
from capsim.profiles.models import MODELS, get_model
from capsim.profiles.report import accuracy_rows, plot_predicted_vs_measured
from capsim.profiles.source import describe_source
from capsim.profiles.store import ENGINES, KERNEL_DB_ENGINES, resolve_profile, shipped_profile_key, shipped_profiles
from capsim.profiles.table import ProfileTable
from capsim.real.engine_profiler import DECODE_BATCHES, DECODE_CONTEXTS, PROMPT_LENGTHS, profile_endpoint

console = Console(width=None if sys.stdout.isatty() else 120)  # files and pipes get wide tables


ENDPOINT_ONLY = {"prompt_lengths", "decode_batches", "decode_contexts", "token_budget"}


@click.command()
@click.option(
    "--model", required=True, help="A catalog model (see `capsim profiles list`), or a YAML / config.json path."
)
@click.option(
    "--source",
    type=click.Choice(["measured", "kernel-db"]),
    default="measured",
    show_default=True,
    help="measured: time real forward passes here (or --endpoint); kernel-db: compose NVIDIA's measured "
    "kernel timings for --engine on --hardware (needs the kernel-db extra, no GPU).",
)
@click.option(
    "--engine",
    type=click.Choice(KERNEL_DB_ENGINES),
    default="vllm",
    show_default=True,
    help="--source kernel-db: whose kernels.",
)
@click.option(
    "--engine-version", default=None, help="--source kernel-db: engine version [default: the database's current one]."
)
@click.option(
    "--tp",
    type=click.IntRange(1, 2**31 - 1),
    default=1,
    show_default=True,
    help="--source kernel-db: tensor parallelism.",
)
@click.option(
    "--pp",
    type=click.IntRange(1, 2**31 - 1),
    default=1,
    show_default=True,
    help="--source kernel-db: pipeline stages (one stage's latency).",
)
@device("cuda")
@click.option(
    "--grid",
    type=click.Choice(list(GRIDS)),
    default="default",
    show_default=True,
    help="Batches to measure; `quick` is a few dozen small ones for CPU tests.",
)
@DTYPE
@click.option(
    "--warmup",
    type=click.IntRange(0, 2**31 - 1),
    default=1,
    show_default=True,
    help="Untimed runs before each timed one.",
)
@click.option(
    "--repeats",
    type=click.IntRange(1, 2**31 - 1),
    default=5,
    show_default=True,
    help="Passes over the grid, one timed run of each batch a pass; the median is kept.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Profile file to write [default: MODEL_DEVICE_tp1.parquet]; an existing one is refused without --overwrite.",
)
@click.option("--overwrite", is_flag=True, help="Replace the -o profile if it exists.")
@endpoint("profile this running engine as a black box instead")
@API_KEY
@click.option(
    "--hardware",
    default=None,
    help="--source kernel-db: the GPU (required); --endpoint: the GPU the engine runs on, for the label.",
)
@click.option(
    "--prompt-lengths",
    default=",".join(map(str, PROMPT_LENGTHS)),
    show_default=True,
    help="--endpoint: prefill points.",
)
@click.option(
    "--decode-batches",
    default=",".join(map(str, DECODE_BATCHES)),
    show_default=True,
    help="--endpoint: decode batch sizes.",
)
@click.option(
    "--decode-contexts",
    default=",".join(map(str, DECODE_CONTEXTS)),
    show_default=True,
    help="--endpoint: decode prompt lengths.",
)
@click.option(
    "--token-budget",
    "--max-num-batched-tokens",
    "token_budget",
    type=click.IntRange(1, 2**31 - 1),
    default=None,
    help="--endpoint: the engine's tokens a step; longer prompts are then measured as the chunks it prefills them "
    "in [default: unknown: every prompt counts as one batch].",
)
@click.pass_context
def profile(
    ctx: click.Context,
    model: str,
    source: str,
    engine: str,
    engine_version: str | None,
    tp: int,
    pp: int,
    device: str,
    grid: str,
    dtype: str | None,
    warmup: int,
    repeats: int,
    output: Path | None,
    overwrite: bool,
    endpoint: str | None,
    api_key: str | None,
    hardware: str | None,
    prompt_lengths: str,
    decode_batches: str,
    decode_contexts: str,
    token_budget: int | None,
) -> None:
    """Measure per-batch prefill, decode and mixed latencies of MODEL on this machine.

    Builds the architecture in torch with random weights (nothing is downloaded) and times real
    forward passes with a KV cache over a designed grid of batches. Interrupted runs resume.

    With --endpoint, measures a running engine (vLLM, capsim serve) through its OpenAI API
    instead: single-request TTFT over prompt lengths, and steady decode step times over batch
    sizes and context lengths, so that simulations can replay that exact engine.
    """
    from capsim.profiles.profiler import device_name, measure_profile

    spec = get_model(model)
    if output is not None:
        new_file(output, overwrite, inputs=[model])
    given = {name for name in ctx.params if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    if source == "kernel-db":
        ignored = sorted(
            given & {"device", "grid", "dtype", "warmup", "repeats", "endpoint", "api_key", *ENDPOINT_ONLY}
        )
        if ignored:
            raise click.UsageError(
                f"--source kernel-db prices kernels from the database: {_flags(ignored)} do not apply; drop them"
            )
        if hardware is None:
            raise click.UsageError("--source kernel-db needs --hardware (see `capsim profiles list`)")
        return _profile_kernel_db(spec, get_hardware(hardware).name, engine, engine_version, tp, pp, output, overwrite)
    not_measured = sorted(given & {"engine", "engine_version", "tp", "pp"})
    if not_measured:
        raise click.UsageError(
            f"{_flags(not_measured)}: for --source kernel-db only; a measured profile is of this machine at TP 1"
        )
    if hardware is not None and not endpoint:
        raise click.UsageError(
            "--hardware names the GPU of --endpoint or of --source kernel-db; a local profile is labelled with "
            "its device (--device)"
        )
    if endpoint:
        return _profile_endpoint(
            spec,
            endpoint,
            api_key,
            hardware or "unknown",
            output,
            overwrite,
            repeats,
            prompt_lengths,
            decode_batches,
            decode_contexts,
            token_budget,
        )
    endpoint_only = sorted(given & ENDPOINT_ONLY)
    if endpoint_only:
        raise click.UsageError(f"{_flags(endpoint_only)}: for --endpoint only; a local profile measures --grid")
    output = output or new_file(
        Path(f"{spec.name}_{device_name(device) if device == 'cpu' else device.replace(':', '')}_tp1.parquet"),
        overwrite,
        flag="the default profile",
    )
    with Progress(
        TextColumn("profiling {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(spec.name, total=None)
        table = measure_profile(
            spec,
            output,
            device=device,
            grid=grid,
            dtype=dtype,
            warmup=warmup,
            repeats=repeats,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    console.print(f"wrote {output}: {len(table)} batches of {table.label}")


def _flags(names) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def _profile_kernel_db(
    spec, hardware: str, engine: str, version: str | None, tp: int, pp: int, output: Path | None, overwrite: bool
) -> None:
    from capsim.profiles.kernel_db import KernelDatabase, kernel_db_profile

    database = KernelDatabase(spec, hardware, engine, version, tp, pp)  # checks coverage before any output
    output = output or new_file(
        Path(f"{spec.name}_{hardware}_tp{tp}{f'_pp{pp}' if pp > 1 else ''}_{engine}.parquet"),
        overwrite,
        flag="the default profile",
    )
    with Progress(TextColumn("pricing {task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task(f"{spec.name} on {hardware}", total=None)
        table = kernel_db_profile(database, progress=lambda done, total: bar.update(task, completed=done, total=total))
    table.to_parquet(output)
    console.print(f"wrote {output}: {len(table)} batches; latencies: {describe_source(table.metadata)}")


def _profile_endpoint(
    spec,
    url,
    api_key,
    hardware,
    output,
    overwrite,
    repeats,
    prompt_lengths,
    decode_batches,
    decode_contexts,
    token_budget,
) -> None:
    from capsim.real.client import connect

    def numbers(text: str, flag: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ProfileError(f"{flag} must be whole numbers separated by commas, got {text!r}") from None
        if not values or min(values) < 1:
            raise ProfileError(f"{flag} needs positive numbers, got {text!r}")
        return values

    points = (
        numbers(prompt_lengths, "--prompt-lengths"),
        numbers(decode_batches, "--decode-batches"),
        numbers(decode_contexts, "--decode-contexts"),
    )
    endpoint = connect(url, api_key)
    output = output or new_file(Path(f"{spec.name}_endpoint_tp1.parquet"), overwrite, flag="the default profile")
    with Progress(
        TextColumn("profiling {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(f"{spec.name} at {endpoint.url}", total=None)
        table = profile_endpoint(
            endpoint,
            spec,
            output,
            hardware,
            None,
            *points,
            repeats=repeats,
            token_budget=token_budget,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    skipped = table.metadata.get("skipped_decode_points")
    if skipped:
        console.print(
            f"[yellow]skipped {len(skipped)} decode points whose requests never all decoded together (more than the "
            f"engine's batch size or KV cache holds): " + ", ".join(f"{b} x {c} tokens" for b, c in skipped) + "[/]"
        )
    console.print(f"wrote {output}: {len(table)} batches of {table.label}")


@click.group()
def profiles() -> None:
    """Latency profiles: the catalogs, shipped and measured profiles, fitted latency models.

    A PROFILE is a profile file; without one, --model/--hardware/--tp pick the profile capsim
    uses for that system and --engine (a measured one, else the kernel database's, else the
    calibrated roofline).
    """


def profile_choice(command):
    command = click.argument("profile_path", required=False, type=click.Path(dir_okay=False, path_type=Path))(command)
    command = click.option("--model", default="Llama-3-8B", show_default=True, help="Model, when no PROFILE is given.")(
        command
    )
    command = click.option(
        "--hardware", default="H100-SXM", show_default=True, help="Hardware, when no PROFILE is given."
    )(command)
    command = click.option(
        "--tp",
        type=click.IntRange(1, 2**31 - 1),
        default=1,
        show_default=True,
        help="Tensor parallelism, when no PROFILE is given.",
    )(command)
    command = click.option(
        "--engine",
        type=click.Choice(ENGINES),
        default="vllm",
        show_default=True,
        help="Engine, when no PROFILE is given.",
    )(command)
    return command


@profiles.command("list")
def list_profiles() -> None:
    """The model and hardware catalogs and the profiles shipped with capsim."""
    models = Table(
        title="models (capsim's own, then every config NVIDIA's aiconfigurator-core ships: profiles/data/"
        "model_catalog.json; any Hugging Face config.json works too)"
    )
    columns = ("name", "params (B)", "active (B)", "layers", "hidden", "attention", "MLP", "precision", "context")
    for column in (*columns, "Hugging Face id"):
        models.add_column(
            column,
            justify="left" if column in ("name", "attention", "MLP", "precision", "Hugging Face id") else "right",
        )
    for m in MODELS.values():
        models.add_row(
            m.name,
            f"{m.params / 1e9:.2f}",
            f"{m.active_params / 1e9:.2f}",
            str(m.layers),
            str(m.hidden),
            _attention_words(m),
            _mlp_words(m),
            m.dtype
            + (f", experts {m.moe_dtype}" if m.moe_dtype else "")
            + (f", KV {m.kv_dtype}" if m.kv_dtype else ""),
            str(m.max_context),
            m.hf_id if "/" in m.hf_id and not Path(m.hf_id).is_absolute() else "",
        )
    console.print(models)
    hardware = Table(title="hardware")
    for column in ("name", "bf16 TFLOP/s", "memory TB/s", "memory GiB", "interconnect"):
        hardware.add_column(column, justify="left" if column in ("name", "interconnect") else "right")
    for h in HARDWARE.values():
        hardware.add_row(
            h.name,
            f"{h.bf16_flops / 1e12:.0f}",
            f"{h.memory_bandwidth / 1e12:.2f}",
            f"{h.memory_bytes / 2**30:.0f}",
            h.interconnect,
        )
    console.print(hardware)
    shipped = Table(
        title="shipped profiles (else: the engine's kernel-database profile made on first use with the "
        "kernel-db extra, else the calibrated roofline)"
    )
    for column in ("engine", "source", "hardware", "model x TP"):
        shipped.add_column(column)
    groups: dict[tuple, list[str]] = {}
    for path in shipped_profiles():
        model_name, hardware_name, tp, engine, measured = shipped_profile_key(path)
        groups.setdefault((engine, "measured" if measured else "kernel-db", hardware_name), []).append(
            f"{model_name} TP{tp}"
        )
    for (engine, source, hardware_name), systems in sorted(groups.items()):
        shipped.add_row(engine, source, hardware_name, ", ".join(systems))
    console.print(shipped)


def _attention_words(m) -> str:
    if m.is_mla:
        return f"MLA {m.heads} heads, latent {m.kv_lora_rank}+{m.qk_rope_head_dim}"
    words = f"{m.heads} heads, {m.kv_heads} KV"
    return words + (f", window {m.sliding_window} in {m.sliding_layers} layers" if m.sliding_window else "")


def _mlp_words(m) -> str:
    if not m.is_moe:
        return f"{m.ffn} {m.ffn_kind}"
    shared = f" + {m.shared_experts} shared" if m.shared_experts else ""
    dense = f", {m.dense_layers} dense layers" if m.dense_layers else ""
    return f"MoE {m.active_experts} of {m.experts}{shared} x {m.expert_ffn}{dense}"


@profiles.command()
@profile_choice
def show(profile_path: Path | None, model: str, hardware: str, tp: int, engine: str) -> None:
    """Where a profile's numbers came from and what batches it covers."""
    table = resolve_profile(model, hardware, tp, path=profile_path, engine=engine)
    console.print(f"[bold]{table.label}[/]: {describe_source(table.metadata)}")
    for key in ("date", "versions", "grid", "device", "run_dtype", "kernel_db", "calibration", "roofline_factors"):
        if key in table.metadata:
            console.print(f"  {key}: {table.metadata[key]}")
    summary = Table()
    for column in ("kind", "batches", "tokens", "decode seqs", "latency ms"):
        summary.add_column(column, justify="left" if column == "kind" else "right")
    features, latency, kinds = table.features, table.latency_s, table.kinds
    for kind in ("prefill", "decode", "mixed"):
        rows = kinds == kind
        if rows.any():
            summary.add_row(
                kind,
                str(rows.sum()),
                f"{features[rows, 0].min():.0f}-{features[rows, 0].max():.0f}",
                f"{features[rows, 4].min():.0f}-{features[rows, 4].max():.0f}",
                f"{latency[rows].min() * 1e3:.2f}-{latency[rows].max() * 1e3:.2f}",
            )
    console.print(summary)
    if table.metadata["source"] == "analytic":
        console.print("[yellow]analytic: a roofline estimate, not a measurement[/]")


@profiles.command()
@profile_choice
def fit(profile_path: Path | None, model: str, hardware: str, tp: int, engine: str) -> None:
    """Fit (or load from the cache) the latency model of a profile and print its held-out error."""
    latency_model = LatencyModel.for_profile(resolve_profile(model, hardware, tp, path=profile_path, engine=engine))
    _print_accuracy(latency_model)


@profiles.command()
@profile_choice
@output_options("profiles-report")
def report(
    profile_path: Path | None, model: str, hardware: str, tp: int, engine: str, output_dir: Path | None, overwrite: bool
) -> None:
    """Held-out MAPE and P95 error per batch kind, as a table, a JSON file and a predicted-vs-measured PNG."""
    folder = results_dir(output_dir, "profiles-report", overwrite)
    table = resolve_profile(model, hardware, tp, path=profile_path, engine=engine)
    latency_model = LatencyModel.for_profile(table)
    _print_accuracy(latency_model)
    m = table.metadata
    engine_name = re.sub(r"[^A-Za-z0-9.-]+", "-", str(m["engine"]))  # an endpoint profile's engine is a URL
    stem = f"latency-model_{m['model']}_{m['hardware']}_tp{m['tp']}_{engine_name}"  # names hold dots: no with_suffix
    with ResultSet(folder) as staging:
        plot_predicted_vs_measured(latency_model, staging / f"{stem}.png")
        write_json(
            staging / f"{stem}.json",
            {
                "profile": latency_model.profile,
                "regressor": latency_model.regressor,
                "accuracy": latency_model.accuracy,
            },
        )
    console.print(f"wrote {folder}/: {stem}.png, {stem}.json")


@profiles.command()
@click.argument("profile_path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("other_path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="vllm",
    show_default=True,
    help="Without OTHER: compare with the profile capsim uses for this engine on the first one's model, GPU and TP.",
)
@output_options("profiles-compare")
@click.pass_context
def compare(
    ctx: click.Context,
    profile_path: Path,
    other_path: Path | None,
    engine: str,
    output_dir: Path | None,
    overwrite: bool,
) -> None:
    """Two profiles of one model, batch by batch.

    At each batch of PROFILE, OTHER's latency model beside PROFILE's seconds: the median ratio
    (OTHER / PROFILE) and its P10-P90 spread by batch kind and regime, and their difference
    split into per-step overhead, linear layers (per token) and attention (per attention
    element). Without OTHER: the profile capsim uses for --engine on PROFILE's model, GPU and TP,
    e.g. a measured reference-engine profile against vLLM's kernel-database one.
    """
    if other_path is not None and ctx.get_parameter_source("engine") is not ParameterSource.DEFAULT:
        raise ProfileError("--engine picks the second profile when OTHER is not given: give one or the other")
    folder = results_dir(output_dir, "profiles-compare", overwrite)
    first = ProfileTable.read(profile_path)
    m = first.metadata
    second = (
        ProfileTable.read(other_path)
        if other_path is not None
        else resolve_profile(m["model"], m["hardware"], m["tp"], engine=engine)
    )
    result = compare_profiles(first, second)
    console.print(f"first: [bold]{first.label}[/]: {describe_source(m)}")
    console.print(f"second: [bold]{second.label}[/]: {describe_source(second.metadata)}")
    table = Table(title="the second's latency model at the first's batches: ratio second / first")
    for column in ("regime", "batches", "first ms (P50)", "ratio P50", "P10-P90", "beyond second's coverage"):
        table.add_column(column, justify="left" if column == "regime" else "right")
    for row in result["rows"]:
        if row["batches"]:
            table.add_row(
                row["regime"],
                str(row["batches"]),
                f"{row['first_ms_median']:.2f}",
                f"{row['ratio_median']:.3f}",
                f"{row['ratio_p10']:.3f}-{row['ratio_p90']:.3f}",
                str(row["beyond_coverage"]),
            )
        else:
            table.add_row(row["regime"], "0", "-", "-", "-", str(row["beyond_coverage"]))
    console.print(table)
    split = result["difference"]
    console.print(f"difference (second - first), fitted over {split['batches']} batches: {split_words(split)}")

    def name(table: ProfileTable) -> str:
        n = table.metadata
        return f"{n['hardware']}_tp{n['tp']}_{n['engine']}-{n['source']}"

    stem = re.sub(
        r"[^A-Za-z0-9._-]+", "-", f"profile-compare_{m['model']}_{name(first)}_vs_{name(second)}"
    )  # an endpoint's engine is a URL
    with ResultSet(folder) as staging:
        write_json(staging / f"{stem}.json", result)
    console.print(f"wrote {folder}/{stem}.json")


def _print_accuracy(latency_model: LatencyModel) -> None:
    table = Table(title=f"held-out error of the latency model; profile: {latency_model.source_words}")
    for column in ("regressor", "batches", "MAPE %", "P95 APE %", "rows"):
        table.add_column(column, justify="left" if column in ("regressor", "batches") else "right")
    for name, kind, mape, p95, rows in accuracy_rows(latency_model):
        kept = " (kept)" if name == latency_model.regressor else ""
        table.add_row(name + kept, kind, f"{mape:.2f}", f"{p95:.2f}", str(rows))
    console.print(table)
