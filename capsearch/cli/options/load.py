"""Command-line options of a load run, in the vocabulary of `vllm bench serve` and GuideLLM:
the loads (--qps/--request-rate, --max-concurrency, --concurrency), the requests left out of the
figures (--warmup-requests, --cooldown-requests), the figures
(--goodput, --percentile-metrics, --metric-percentiles) and the result files (--save-result,
--result-dir, --result-filename, --label, --metadata). Shared by `simulate` and `bench`."""

from __future__ import annotations

import functools

import click

from capsim.capsearch.cli.options.slo import GOODPUT
from capsim.capsearch.cli.options.workload import option_given
from capsim.capsearch.load.metrics import METRICS, MetricsError, parse_goodput, parse_metrics, parse_percentiles
from capsim.capsearch.load.sweep import LoadRun, parse_counts, parse_qps, planned_loads
from capsim.capsearch.load.vllm_results import check_result_options, parse_metadata

# The parameters that say which loads run and which requests count (a replay takes them from its
# folder); the others say which figures to report and where to write them.
LOAD_PARAMS = ("qps", "max_concurrency", "concurrency", "sweep_points", "warmup_requests", "cooldown_requests")


def load_options(command):
    """Add the load, metric and result options; the command receives `load_run` (a LoadRun)."""
    options = [
        click.option(
            "--qps",
            "--request-rate",
            "qps",
            default=None,
            help="Requests per second: one rate, a comma list for a load sweep (1,2,4,8), inf (every request at "
            "once), or auto (GuideLLM's sweep: one user, then all at once, then rates from the first's to 20% "
            "past the second's).",
        ),
        click.option(
            "--max-concurrency",
            type=click.IntRange(1, 2**31 - 1),
            default=None,
            help="Requests in flight at most; one due while it is reached waits for one to end (vLLM's).",
        ),
        click.option(
            "--concurrency",
            default=None,
            help="N users, each sending its next request when the last ends (a closed loop); a comma list sweeps them.",
        ),
        click.option(
            "--warmup-requests",
            type=click.IntRange(0, 2**31 - 1),
            default=0,
            show_default=True,
            help="The first N requests sent warm the engine up: sent, and left out of every figure (GuideLLM's "
            "warm-up, aiperf's --warmup-request-count run straight on).",
        ),
        click.option(
            "--cooldown-requests",
            type=click.IntRange(0, 2**31 - 1),
            default=0,
            show_default=True,
            help="The last N requests sent, left out of every figure (the tail where the load thins out).",
        ),
        click.option(
            "--sweep-points",
            type=click.IntRange(2, 100),
            default=6,
            show_default=True,
            help="--qps auto: the Poisson rates between the synchronous and throughput runs.",
        ),
        GOODPUT,
        click.option(
            "--percentile-metrics",
            default=",".join(METRICS),
            show_default=True,
            help="Which latencies to report: ttft, tpot, itl, e2el.",
        ),
        click.option(
            "--metric-percentiles",
            default="50,90,99",
            show_default=True,
            help="Percentiles to report, e.g. 50,90,99,99.9.",
        ),
        click.option(
            "--save-result",
            is_flag=True,
            help="Also write one vLLM-style result JSON a load (vllm bench serve's keys).",
        ),
        click.option(
            "--result-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Where --save-result writes [default: the results folder].",
        ),
        click.option(
            "--result-filename", default=None, help="The JSON's name (one load only) [default: vLLM's pattern]."
        ),
        click.option("--label", default=None, help="A name for this run, in result files and plots."),
        click.option(
            "--metadata", multiple=True, help="KEY=VALUE pairs stored at the top of each result JSON (repeatable)."
        ),
    ]

    @functools.wraps(command)
    def wrapper(
        *args,
        qps,
        max_concurrency,
        concurrency,
        warmup_requests,
        cooldown_requests,
        sweep_points,
        goodput,
        percentile_metrics,
        metric_percentiles,
        save_result,
        result_dir,
        result_filename,
        label,
        metadata,
        **kwargs,
    ):
        if kwargs.get("against") is not None and qps is None and concurrency is None:
            loads = []  # simulate --against: the folder's loads, read by the command
        else:
            loads = planned_loads(
                parse_qps(qps) if qps is not None else None,
                max_concurrency,
                parse_counts(concurrency, "--concurrency") if concurrency is not None else None,
            )
        if loads != "auto" and option_given("sweep_points"):
            raise MetricsError("--sweep-points shapes --qps auto: leave it out, or sweep with --qps auto")
        check_result_options(save_result, result_dir, result_filename, metadata, 2 if loads == "auto" else len(loads))
        run = LoadRun(
            loads,
            sweep_points,
            parse_metrics(percentile_metrics),
            parse_percentiles(metric_percentiles),
            parse_goodput(goodput),
            save_result,
            result_dir,
            result_filename,
            label,
            parse_metadata(metadata),
            warmup_requests,
            cooldown_requests,
        )
        return command(*args, load_run=run, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
