"""Command-line options that describe a workload, shared by every command that replays one."""

from __future__ import annotations

import functools

import click
from click.core import ParameterSource

from capsim.traces import FORMATS, PROCESSES, WorkloadSpec
from capsim.traces.spec import MAX_REQUESTS, RANDOM

TRACE = click.option(
    "--trace",
    default="chat",
    show_default=True,
    help="Built-in trace name, trace file, or `random` (lengths from --random-input-len and --random-output-len).",
)
TRACE_FORMAT = click.option(
    "--format",
    "format_",
    type=click.Choice(list(FORMATS)),
    default=None,
    help="Trace file format; detected from the file's columns when left out.",
)


def workload_options(command):
    """Add the length and arrival options; the command receives `spec_options` to build a spec."""
    options = [
        TRACE_FORMAT,
        click.option(
            "-n",
            "--num-requests",
            "--num-prompts",
            "num_requests",
            type=click.IntRange(1, MAX_REQUESTS),
            default=2048,
            show_default=True,
            help="Requests to draw (built-in trace) or to take from the start of the file.",
        ),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of every random draw: same seed, same requests at every QPS [a peer's config: 42].",
        ),
        click.option(
            "--max-total-tokens",
            type=click.IntRange(min=2),
            default=None,
            help="Shrink prompt and output in proportion where their sum exceeds this.",
        ),
        click.option("--prompt-scale", type=float, default=1.0, show_default=True, help="Multiply prompt lengths."),
        click.option("--output-scale", type=float, default=1.0, show_default=True, help="Multiply output lengths."),
        click.option(
            "--shuffle/--no-shuffle",
            default=False,
            show_default=True,
            help="Take the file's requests in a seeded random order before the first N, as the peers do "
            "(files only) [default: on for a peer's config, off otherwise].",
        ),
        click.option(
            "--arrival",
            type=click.Choice(PROCESSES),
            default="poisson",
            show_default=True,
            help="Arrival process; replay uses the trace's own timestamps rescaled to the QPS.",
        ),
        click.option(
            "--cv", type=float, default=None, help="Burstiness (coefficient of variation) of --arrival gamma."
        ),
        click.option(
            "--burstiness",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="vLLM's: gamma-distributed gaps of this shape (1: Poisson; < 1 burstier); = 1/cv^2.",
        ),
        click.option(
            "--random-input-len",
            type=click.IntRange(1, 2**31 - 1),
            default=None,
            help="vLLM's random dataset: prompts of this many tokens, no trace file (trace `random`) [1024].",
        ),
        click.option(
            "--random-output-len",
            type=click.IntRange(1, 2**31 - 1),
            default=None,
            help="Outputs of this many tokens (trace `random`) [128].",
        ),
        click.option(
            "--random-range-ratio",
            type=click.FloatRange(0, 1, max_open=True),
            default=None,
            help="Lengths uniform in len * [1 - ratio, 1 + ratio] (trace `random`) [0: fixed].",
        ),
        click.option(
            "--cap-gaps/--no-cap-gaps",
            default=False,
            show_default=True,
            help="Cap Poisson gaps at 3/QPS as Sarathi-Serve and Etalon do: the mean gap shrinks by 5%, so the "
            "offered load is 5% above the nominal QPS and capacity reads ~5% lower [default: on for a peer's "
            "config, off otherwise].",
        ),
    ]

    @functools.wraps(command)
    def wrapper(
        *args,
        format_,
        num_requests,
        seed,
        max_total_tokens,
        prompt_scale,
        output_scale,
        shuffle,
        arrival,
        cv,
        burstiness,
        random_input_len,
        random_output_len,
        random_range_ratio,
        cap_gaps,
        **kwargs,
    ):
        if burstiness is not None:  # vLLM's gamma shape: Poisson at 1
            if option_given("arrival") or cv is not None:
                raise click.UsageError(
                    "--burstiness sets the arrival process (gamma of that shape): drop --arrival and --cv"
                )
            arrival, cv = ("poisson", None) if burstiness == 1 else ("gamma", burstiness**-0.5)
        randoms = {
            "random_input_len": random_input_len,
            "random_output_len": random_output_len,
            "random_range_ratio": random_range_ratio if random_range_ratio is not None else 0.0,
        }
        synthetic = any(v is not None for v in (random_input_len, random_output_len, random_range_ratio))

        def make_spec(trace: str) -> WorkloadSpec:
            if synthetic and trace != RANDOM:
                if option_given("trace"):
                    raise click.UsageError(f"--random-* lengths make the {RANDOM!r} trace: drop --trace {trace}")
                trace = RANDOM
            return WorkloadSpec(
                trace=trace,
                num_requests=num_requests,
                seed=seed,
                format=format_,
                max_total_tokens=max_total_tokens,
                prompt_scale=prompt_scale,
                output_scale=output_scale,
                shuffle=shuffle,
                arrival=arrival,
                cv=cv,
                cap_gaps=cap_gaps,
                **(randoms if trace == RANDOM else {}),
            )

        return command(*args, make_spec=make_spec, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def workload_params() -> tuple[str, ...]:
    """The parameters that decide a workload's requests: --trace and those workload_options adds
    (a replay takes them from its folder)."""
    return ("trace", *(p.name for p in workload_options(lambda **_: None).__click_params__))


def option_given(name: str) -> bool:
    """Whether the running command's option `name` was given, not left at its default."""
    context = click.get_current_context(silent=True)
    source = context.get_parameter_source(name) if context is not None else None
    return source not in (ParameterSource.DEFAULT, None)
