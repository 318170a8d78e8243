"""Command-line options that describe a workload, shared by every command that replays one."""

from __future__ import annotations

import functools

import click

from capsim.traces import FORMATS, PROCESSES, WorkloadSpec
from capsim.traces.spec import MAX_REQUESTS


def workload_options(command):
    """Add the length and arrival options; the command receives `spec_options` to build a spec."""
    options = [
        click.option("--format", "format_", type=click.Choice(list(FORMATS)), default=None,
                     help="File format; detected from the file's columns when left out."),
        click.option("-n", "--num-requests", type=click.IntRange(1, MAX_REQUESTS), default=2048, show_default=True,
                     help="Requests to draw (built-in trace) or to take from the start of the file."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of every random draw: same seed, same requests at every QPS [a peer's config: 42]."),
        click.option("--max-total-tokens", type=click.IntRange(min=2), default=None,
                     help="Shrink prompt and output in proportion where their sum exceeds this."),
        click.option("--prompt-scale", type=float, default=1.0, show_default=True, help="Multiply prompt lengths."),
        click.option("--output-scale", type=float, default=1.0, show_default=True, help="Multiply output lengths."),
        click.option("--shuffle/--no-shuffle", default=False, show_default=True,
                     help="Take the file's requests in a seeded random order before the first N, as the peers do "
                          "(files only) [default: on for a peer's config, off otherwise]."),
        click.option("--arrival", type=click.Choice(PROCESSES), default="poisson", show_default=True,
                     help="Arrival process; replay uses the trace's own timestamps rescaled to the QPS."),
        click.option("--cv", type=float, default=None, help="Burstiness (coefficient of variation) of --arrival gamma."),
        click.option("--cap-gaps/--no-cap-gaps", default=False, show_default=True,
                     help="Cap Poisson gaps at 3/QPS as Sarathi-Serve and Etalon do: the mean gap shrinks by 5%, so the "
                          "offered load is 5% above the nominal QPS and capacity reads ~5% lower [default: on for a peer's "
                          "config, off otherwise]."),
    ]

    @functools.wraps(command)
    def wrapper(*args, format_, num_requests, seed, max_total_tokens, prompt_scale, output_scale,
                shuffle, arrival, cv, cap_gaps, **kwargs):
        def make_spec(trace: str) -> WorkloadSpec:
            return WorkloadSpec(
                trace=trace, num_requests=num_requests, seed=seed, format=format_,
                max_total_tokens=max_total_tokens, prompt_scale=prompt_scale, output_scale=output_scale,
                shuffle=shuffle, arrival=arrival, cv=cv, cap_gaps=cap_gaps,
            )
        return command(*args, make_spec=make_spec, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
