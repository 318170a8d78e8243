"""How a command runs, as opposed to what it computes: where its results and trial cache go, how
its searches run in parallel, how long a run may take, and the bearer token of an endpoint.
Each flag is declared here once and composed by the commands that take it."""

from __future__ import annotations

import re
from pathlib import Path

import click

from capsim.capsearch.capacity.jobs import EXECUTORS
from capsim.capsearch.capacity.workers import pool_size, start_fork_server
from capsim.capsearch.report.results_dir import RESULTS_ROOT

UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
WORDS = {"s": "seconds", "m": "minutes"}
DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|m|min|h)?\s*")


class Duration(click.ParamType):
    """A positive duration: '90s', '30m', '2h', or a bare number in the command's own unit
    (minutes for search and sweep, as Sarathi-Serve's --time-limit; seconds elsewhere).
    The value the command receives is in its own unit."""

    name = "duration"

    def __init__(self, unit: str):
        self.unit = unit

    def convert(self, value, param, ctx):
        match = DURATION.fullmatch(str(value))  # a number given in code is read as a bare number
        if not match or float(match.group(1)) <= 0:
            self.fail(
                f"{value!r} is not a positive duration: give e.g. 90s, 30m, 2h (a bare number is {WORDS[self.unit]})",
                param,
                ctx,
            )
        seconds = float(match.group(1)) * UNITS[match.group(2) or self.unit]
        return seconds / UNITS[self.unit]


def time_limit(unit: str, what: str):
    """--time-limit: `what` it limits, a bare number read in `unit` ("s" or "m")."""
    return click.option(
        "--time-limit",
        type=Duration(unit),
        default=None,
        help=f"{what} (a duration: 90s, 30m, 2h; a bare number is {WORDS[unit]}).",
    )


def output_options(command: str):
    """-o/--output-dir and --overwrite, for a command whose results go to capsim-results/<command>/."""

    def wrap(function):
        function = click.option(
            "--overwrite",
            is_flag=True,
            help="Replace an earlier capsim result in the -o folder (a folder holding other files is refused).",
        )(function)
        return click.option(
            "-o",
            "--output-dir",
            type=click.Path(path_type=Path),
            default=None,
            help=f"Folder for the results [default: a new one, {RESULTS_ROOT}/{command}/<date-time>]; "
            "one that holds something is refused without --overwrite.",
        )(function)

    return wrap


CACHE_DIR = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Trial cache [default: $CAPSIM_CACHE/trials or ~/.cache/capsim/trials].",
)


def parallel_options(function):
    """--executor, --workers, --ray-address and --cache-dir: where the searches run and share their trials."""
    for option in reversed(
        [
            click.option(
                "--executor",
                type=click.Choice(EXECUTORS),
                default="process",
                show_default=True,
                help="process: a pool on this machine; ray: a Ray cluster; serial: in this process.",
            ),
            click.option(
                "--workers",
                type=click.IntRange(1, 1024),
                default=None,
                help="Searches at once [default: the CPU count; Ray: its CPUs].",
            ),
            click.option(
                "--ray-address",
                default=None,
                help="Join this Ray cluster (--executor ray); the trial cache must be on shared storage.",
            ),
            CACHE_DIR,
        ]
    ):
        function = option(function)
    return function


def start_workers(options: dict, jobs: int) -> None:
    """Where `jobs` searches will run in a local pool, start its fork server now: its imports
    overlap the command's checks and printing (one search runs in this process: no server)."""
    if pool_size(options.get("executor"), options.get("workers"), jobs) > 1:
        start_fork_server()


API_KEY = click.option(
    "--api-key",
    envvar="OPENAI_API_KEY",
    default=None,
    show_envvar=True,
    help="Bearer token for the endpoint; never written.",
)
