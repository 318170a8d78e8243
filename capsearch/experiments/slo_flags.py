"""SLOs from the peers' SLO flags, as each peer spells them (the flags are declared in cli/options/slo.py).

Both peers' flags: Sarathi-Serve's --tbt-slo-value, --tbt-slo-quantile, --scheduling-delay-slo-value,
--scheduling-delay-slo-quantile; Etalon's --slo-type, --tbt-slo, --tbt-percentile, --ttft-slo, --ttft-percentile,
--tpot-slo, --tpot-percentile, --ttft-slack-slo, --deadline-miss-rate-slo, --deadline-miss-rate-percentile; vLLM's
--goodput. The SLO type follows from the clauses given, unless --slo-type says it: a slack or miss-rate clause means
deadline, a TPOT clause ttft_tpot, --goodput goodput, a TBT clause (or Sarathi-Serve's scheduling delay) tbt_ttft; with
none of these, the convention's own type. Fields not given take the defaults of the convention in force
(conventions.py), and the output names each field so filled.
"""

from __future__ import annotations

from capsim.capsearch.capacity.slo import Deadline, Goodput, TbtTtft, TtftTpot
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.experiments.conventions import SLO_DEFAULTS, WORDS, capsim_ttft_percentile
from capsim.capsearch.load.metrics import parse_goodput

SARATHI_FLAGS = ("tbt_slo_value", "tbt_slo_quantile", "scheduling_delay_slo_value", "scheduling_delay_slo_quantile")
ETALON_FLAGS = (
    "slo_type",
    "tbt_slo",
    "tbt_percentile",
    "ttft_slo",
    "ttft_percentile",
    "tpot_slo",
    "tpot_percentile",
    "ttft_slack_slo",
    "deadline_miss_rate_slo",
    "deadline_miss_rate_percentile",
)
VLLM_FLAGS = ("goodput", "goodput_attainment")
SLO_FLAGS = SARATHI_FLAGS + ETALON_FLAGS + VLLM_FLAGS + ("ttft_metric", "deadline_denominator")
SAME_FIELD = (
    ("tbt_slo", "tbt_slo_value"),
    ("tbt_percentile", "tbt_slo_quantile"),
    ("ttft_slo", "scheduling_delay_slo_value"),
    ("ttft_percentile", "scheduling_delay_slo_quantile"),
)
# Flags that one SLO type alone reads: given without --slo-type, they say which type is meant.
TYPE_CLAUSES = {
    "deadline": {"ttft_slack_slo", "deadline_miss_rate_slo", "deadline_miss_rate_percentile", "deadline_denominator"},
    "ttft_tpot": {"tpot_slo", "tpot_percentile"},
    "goodput": {"goodput", "goodput_attainment"},
    "tbt_ttft": {
        "tbt_percentile",
        "tbt_slo_quantile",
        "scheduling_delay_slo_value",
        "scheduling_delay_slo_quantile",
        "ttft_metric",
    },
}
# The flags each SLO type reads; any other SLO flag given with it is refused, never dropped.
USED_FLAGS = {
    "tbt_ttft": {
        "slo_type",
        "tbt_slo",
        "tbt_slo_value",
        "tbt_percentile",
        "tbt_slo_quantile",
        "ttft_slo",
        "scheduling_delay_slo_value",
        "ttft_percentile",
        "scheduling_delay_slo_quantile",
        "ttft_metric",
    },
    "ttft_tpot": {"slo_type", "ttft_slo", "ttft_percentile", "tpot_slo", "tpot_percentile"},
    "deadline": {
        "slo_type",
        "tbt_slo",
        "tbt_slo_value",
        "ttft_slack_slo",
        "deadline_miss_rate_slo",
        "deadline_miss_rate_percentile",
        "deadline_denominator",
    },
    "goodput": {"slo_type", "goodput", "goodput_attainment"},
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def flag_convention(options: dict, given) -> str | None:
    """Sarathi-Serve's, where its own spellings of the SLO flags were used; else None (Etalon's
    flag names are capsim's own: they pick no peer)."""
    return "sarathi" if any(given(f) for f in SARATHI_FLAGS) else None


def slo_kind(given: set[str], options: dict, convention: str) -> str:
    """The SLO type: --slo-type, else the one the clauses given name, else the convention's."""
    if "slo_type" in given:
        return options["slo_type"]
    named = sorted(kind for kind, flags in TYPE_CLAUSES.items() if given & flags)
    if len(named) > 1:
        clauses = ", ".join(flag(f) for kind in named for f in sorted(given & TYPE_CLAUSES[kind]))
        raise ConfigError(
            f"{clauses} are clauses of different SLO types ({', '.join(named)}): give one type's clauses, or --slo-type"
        )
    if named:
        return named[0]
    default = SLO_DEFAULTS[convention]["slo_type"]
    return default if given <= USED_FLAGS[default] else "tbt_ttft"


def slos_from_flags(options: dict, convention: str) -> list:
    """The SLOs the flags state, fields not given taken from the convention's defaults."""
    return slos_and_defaults(options, convention)[0]


def slos_and_defaults(options: dict, convention: str) -> tuple[list, list[str]]:
    """The SLOs the flags state, and the fields that the convention's defaults filled (words)."""
    given = {name for name in SLO_FLAGS if options.get(name) not in (None, ())}
    for etalon, sarathi in SAME_FIELD:
        if {etalon, sarathi} <= given:
            raise ConfigError(f"{flag(etalon)} and {flag(sarathi)} set the same field: give one")
    d = SLO_DEFAULTS[convention]
    filled = []

    def pick(*names, default, field=None, unit=""):
        for name in names:
            if name in given:
                return options[name]
        if field:
            filled.append(f"{field} {default if isinstance(default, str) else f'{default:g}'}{unit}")
        return default

    kind = slo_kind(given, options, convention)
    unused = given - USED_FLAGS[kind]
    if unused:
        raise ConfigError(
            f"a {kind} SLO does not use {', '.join(sorted(map(flag, unused)))}: leave them out, "
            "or choose another --slo-type"
        )
    if kind == "goodput":
        limits = parse_goodput(options.get("goodput") or ())
        return [
            Goodput(
                **{name: ms / 1000 for name, ms in limits.items()},
                attainment=pick("goodput_attainment", default=90, field="attainment", unit="%"),
            )
        ], filled
    tbt_values = pick("tbt_slo", "tbt_slo_value", default=(d["tbt"],)) if kind in ("tbt_ttft", "deadline") else ()
    if kind in ("tbt_ttft", "deadline") and not given & {"tbt_slo", "tbt_slo_value"}:
        filled.append(f"TBT limit {d['tbt']:g} s")
    if kind in ("tbt_ttft", "ttft_tpot"):
        ttft = pick("ttft_slo", "scheduling_delay_slo_value", default=d["ttft"], field="first-token limit", unit=" s")
        ttft_percentile = pick(
            "ttft_percentile",
            "scheduling_delay_slo_quantile",
            default=d["ttft_percentile"] or capsim_ttft_percentile(kind),
            field="first-token percentile",
        )
    if kind == "tbt_ttft":
        # Sarathi-Serve's scheduling-delay flags say what is limited, whatever the convention's default
        metric = pick(
            "ttft_metric",
            default="scheduling_delay" if "scheduling_delay_slo_value" in given else d["ttft_metric"],
            field="first-token metric",
        )
        tbt_percentile = pick("tbt_percentile", "tbt_slo_quantile", default=d["tbt_percentile"], field="TBT percentile")
        return [
            TbtTtft(
                tbt=v, tbt_percentile=tbt_percentile, ttft=ttft, ttft_percentile=ttft_percentile, ttft_metric=metric
            )
            for v in tbt_values
        ], filled
    if kind == "ttft_tpot":
        return [
            TtftTpot(
                ttft=ttft,
                ttft_percentile=ttft_percentile,
                tpot=pick("tpot_slo", default=d["tpot"], field="TPOT limit", unit=" s"),
                tpot_percentile=pick("tpot_percentile", default=d["tpot_percentile"], field="TPOT percentile"),
            )
        ], filled
    slack = pick("ttft_slack_slo", default=d["ttft_slack"], field="first-token slack", unit=" s")
    miss_rate = pick("deadline_miss_rate_slo", default=d["miss_rate"], field="miss rate")
    miss_percentile = pick(
        "deadline_miss_rate_percentile", default=d["miss_rate_percentile"], field="miss-rate percentile"
    )
    denominator = pick("deadline_denominator", default=d["denominator"], field="miss-rate denominator")
    return [
        Deadline(
            tbt=v, ttft_slack=slack, miss_rate=miss_rate, miss_rate_percentile=miss_percentile, denominator=denominator
        )
        for v in tbt_values
    ], filled


def defaults_words(filled: list[str], convention: str) -> str:
    """', fields not given from <peer>'s defaults: <field value>, ...', or '' where none was."""
    return f", fields not given from {WORDS[convention]} defaults: {', '.join(filled)}" if filled else ""


def default_slos(convention: str) -> list:
    return slos_from_flags({}, convention)


def describe_convention(convention: str, reason: str) -> str:
    return f"SLO defaults: {WORDS[convention]} ({reason})"
