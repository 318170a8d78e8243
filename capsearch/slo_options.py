"""Command-line options that state an SLO, shared by search, sweep and confirm."""

from __future__ import annotations

import click

from capsim.capsearch.slo import SLO_KINDS, Deadline, TbtTtft, TtftTpot

SLO_FLAGS = ("slo_type", "tbt_slo", "tbt_percentile", "ttft_slo", "ttft_percentile", "ttft_metric", "ttft_slack_slo",
             "tpot_slo", "tpot_percentile", "deadline_miss_rate_slo", "deadline_miss_rate_percentile")


def slo_options(command):
    """Add the SLO flags; the command receives them as keyword arguments (see slos_from_flags)."""
    options = [
        click.option("--slo-type", type=click.Choice(list(SLO_KINDS)), default="tbt_ttft", show_default=True),
        click.option("--tbt-slo-value", "--tbt-slo", "tbt_slo", type=float, multiple=True,
                     help="TBT limit in seconds (tbt_ttft, deadline); repeat it for several SLOs [default 0.1]."),
        click.option("--tbt-percentile", type=float, default=99, show_default=True),
        click.option("--ttft-slo", "--scheduling-delay-slo", "ttft_slo", type=float, default=2.0, show_default=True,
                     help="TTFT limit in seconds (scheduling delay for tbt_ttft by default, as Sarathi-Serve scores it)."),
        click.option("--ttft-percentile", type=float, default=None, help="[default: 50 for tbt_ttft, 99 for ttft_tpot]"),
        click.option("--ttft-metric", type=click.Choice(["scheduling_delay", "ttft"]), default="scheduling_delay", show_default=True,
                     help="What tbt_ttft limits besides TBT."),
        click.option("--ttft-slack-slo", type=float, default=0.5, show_default=True, help="deadline: slack on the first token."),
        click.option("--tpot-slo", type=float, default=0.1, show_default=True),
        click.option("--tpot-percentile", type=float, default=99, show_default=True),
        click.option("--deadline-miss-rate-slo", type=float, default=0.1, show_default=True),
        click.option("--deadline-miss-rate-percentile", type=float, default=99, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def slos_from_flags(o: dict) -> list:
    tbt_values = o["tbt_slo"] or (0.1,)
    kind = o["slo_type"]
    if kind == "tbt_ttft":
        return [TbtTtft(tbt=v, tbt_percentile=o["tbt_percentile"], ttft=o["ttft_slo"], ttft_percentile=o["ttft_percentile"] or 50,
                        ttft_metric=o["ttft_metric"]) for v in tbt_values]
    if kind == "ttft_tpot":
        return [TtftTpot(ttft=o["ttft_slo"], ttft_percentile=o["ttft_percentile"] or 99, tpot=o["tpot_slo"], tpot_percentile=o["tpot_percentile"])]
    return [Deadline(tbt=v, ttft_slack=o["ttft_slack_slo"], miss_rate=o["deadline_miss_rate_slo"],
                     miss_rate_percentile=o["deadline_miss_rate_percentile"]) for v in tbt_values]
