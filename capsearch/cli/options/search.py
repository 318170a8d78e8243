"""Flags of a capacity search, simulated or real (search, sweep, confirm)."""

from __future__ import annotations

import click

START_QPS = click.option(
    "--start-qps",
    type=float,
    default=1.0,
    show_default=True,
    help="The first QPS the simulated search tries [a config: its start_qps]; given with a config, it replaces them.",
)
EARLY_STOP = click.option(
    "--early-stop/--no-early-stop",
    default=True,
    show_default=True,
    help="Stop a trial, simulated or real, once it can no longer pass.",
)
SCREEN = click.option(
    "--screen/--no-screen",
    default=True,
    show_default=True,
    help="Steer each simulated search with short trials (a quarter of the requests, 10% steps) before its full "
    "ones; the capacity and its bracket are full trials either way.",
)
