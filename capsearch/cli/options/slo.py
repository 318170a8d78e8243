"""Command-line options that state an SLO, shared by search, sweep and confirm.

Both peers' flags, as they spell them: Sarathi-Serve's --tbt-slo-value, --tbt-slo-quantile,
--scheduling-delay-slo-value, --scheduling-delay-slo-quantile; Etalon's --slo-type, --tbt-slo,
--tbt-percentile, --ttft-slo, --ttft-percentile, --tpot-slo, --tpot-percentile,
--ttft-slack-slo, --deadline-miss-rate-slo, --deadline-miss-rate-percentile. Percentiles as
fractions (0.99) or percentages (99; exactly 1 is 100%). The SLO type follows from the clauses
given, unless --slo-type says it: a slack or miss-rate clause means deadline, a TPOT clause
ttft_tpot, --goodput goodput, a TBT clause (or Sarathi-Serve's scheduling delay) tbt_ttft; with
none of these, the convention's own type. Fields not given take the defaults of the convention in
force (experiments/conventions.py), and the output names each field so filled: --slo-defaults if given, else
the config's (an Etalon config: Etalon's, a Sarathi-Serve OSDI config: Sarathi-Serve's), else
Sarathi-Serve's where its own spellings (--tbt-slo-value, ...) were used, else capsim's. Etalon's
flag names are capsim's own, so they alone pick no peer.
"""

from __future__ import annotations

import click

from capsim.capsearch.capacity.slo import DENOMINATORS, SLO_KINDS
from capsim.capsearch.experiments.conventions import CONVENTIONS, SLO_DEFAULTS

PERCENTILE = "a fraction (0.99) or a percentage (99)"
GOODPUT = click.option(
    "--goodput",
    multiple=True,
    help="vLLM's goodput limits in ms, e.g. 'ttft:200 tpot:50 e2el:5000': a request is good within all "
    "of them. search, sweep, plan, confirm: the SLO (implies --slo-type goodput); simulate, bench: "
    "the goodput figure (good requests a second).",
)


def _defaults(field: str) -> str:
    values = [f"{name} {SLO_DEFAULTS[name][field]:g}" for name in CONVENTIONS if SLO_DEFAULTS[name][field] is not None]
    return "[default: " + ", ".join(values) + "]"


def slo_options(command):
    """Add the SLO flags; the command receives them as keyword arguments (see slos_from_flags)."""
    options = [
        click.option(
            "--slo-defaults",
            type=click.Choice(CONVENTIONS),
            default=None,
            help="Whose defaults fill the SLO fields not given [default: the config's peer, else the peer whose flags "
            "are used, else capsim's].",
        ),
        click.option(
            "--slo-type",
            type=click.Choice(list(SLO_KINDS)),
            default=None,
            help="[default: capsim and sarathi tbt_ttft, etalon deadline]",
        ),
        click.option(
            "--tbt-slo",
            "tbt_slo",
            type=float,
            multiple=True,
            help=f"TBT limit in seconds (tbt_ttft, deadline); repeat it for several SLOs {_defaults('tbt')}.",
        ),
        click.option(
            "--tbt-slo-value", "tbt_slo_value", type=float, multiple=True, help="Sarathi-Serve's spelling of --tbt-slo."
        ),
        click.option("--tbt-percentile", type=float, default=None, help=f"{PERCENTILE} {_defaults('tbt_percentile')}"),
        click.option(
            "--tbt-slo-quantile", type=float, default=None, help="Sarathi-Serve's spelling of --tbt-percentile."
        ),
        click.option(
            "--ttft-slo",
            type=float,
            default=None,
            help=f"Limit in seconds on TTFT, or on scheduling delay for tbt_ttft as Sarathi-Serve scores it "
            f"{_defaults('ttft')}.",
        ),
        click.option(
            "--scheduling-delay-slo-value",
            "--scheduling-delay-slo",
            "scheduling_delay_slo_value",
            type=float,
            default=None,
            help="Sarathi-Serve's: a scheduling-delay limit in seconds (tbt_ttft).",
        ),
        click.option(
            "--ttft-percentile",
            type=float,
            default=None,
            help=f"{PERCENTILE} [default: capsim 50 for tbt_ttft, 99 for ttft_tpot; sarathi 50; etalon 90]",
        ),
        click.option(
            "--scheduling-delay-slo-quantile",
            type=float,
            default=None,
            help="Sarathi-Serve's spelling of --ttft-percentile.",
        ),
        click.option(
            "--ttft-metric",
            type=click.Choice(["scheduling_delay", "ttft"]),
            default=None,
            help="What tbt_ttft limits besides TBT [default: capsim and sarathi scheduling_delay, etalon ttft].",
        ),
        click.option(
            "--ttft-slack-slo",
            type=float,
            default=None,
            help=f"deadline: slack on the first token {_defaults('ttft_slack')}.",
        ),
        click.option(
            "--tpot-slo", type=float, default=None, help=f"ttft_tpot: TPOT limit in seconds {_defaults('tpot')}."
        ),
        click.option(
            "--tpot-percentile", type=float, default=None, help=f"{PERCENTILE} {_defaults('tpot_percentile')}"
        ),
        click.option(
            "--deadline-miss-rate-slo",
            type=float,
            default=None,
            help=f"deadline: miss-rate limit {_defaults('miss_rate')}.",
        ),
        click.option(
            "--deadline-miss-rate-percentile",
            type=float,
            default=None,
            help=f"{PERCENTILE} {_defaults('miss_rate_percentile')}",
        ),
        GOODPUT,
        click.option(
            "--goodput-attainment",
            type=float,
            default=None,
            help=f"goodput: the share of requests that must meet every limit, {PERCENTILE} [default: 90].",
        ),
        click.option(
            "--deadline-denominator",
            type=click.Choice(DENOMINATORS),
            default=None,
            help="deadline: divide missed deadlines by deadlines (Etalon: on-time tokens + missed) or by output "
            "tokens (stricter) [default: deadlines].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
