"""The Python API (`import capsim`): each entry point gives what its command writes, the same
content as the CLI's files, and refuses bad arguments with the CLI's one-line errors."""

import csv
import math

import pyarrow as pa
import pytest
from click.testing import CliRunner

import capsim
from capsim.capsearch import api as capsearch_api
from capsim.capsearch.cli import main
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.report.capacity import CSV_COLUMNS
from capsim.capsearch.report.plan import CSV_COLUMNS as PLAN_COLUMNS
from capsim.sim import SystemSpec as SimSystemSpec

SYSTEM = dict(model="Llama-3.1-8B", hardware="H100", scheduler="sarathi", token_budget=512, max_batch_size=128)


def invoke(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def test_import_capsim_gives_the_api_and_leaves_the_layers_light():
    assert set(capsim.__all__) >= {"simulate", "search", "sweep", "plan", "validate", "SystemSpec", "WorkloadSpec"}
    assert capsim.SystemSpec is SimSystemSpec and capsim.search is capsearch_api.search
    with pytest.raises(AttributeError):
        capsim.no_such_name  # noqa: B018


def test_simulate_gives_the_run_and_refuses_a_missing_load(tmp_path):
    system, workload = capsim.SystemSpec(**SYSTEM), capsim.WorkloadSpec("chat", num_requests=64)
    run = capsim.simulate(system, workload, qps=4)
    assert run.requests.num_rows == 64 and run.summary()["requests"]["finished"] == 64
    closed = capsim.simulate(system, workload, concurrency=8)
    assert closed.info["max_concurrency"] == 8
    assert (run.write(tmp_path / "run") / "requests.parquet").is_file()
    with pytest.raises(ConfigError, match="give the load"):
        capsim.simulate(system, workload)
    with pytest.raises(ConfigError, match="qps must be positive"):
        capsim.simulate(system, workload, qps=-1)


def test_search_gives_the_rows_of_capsim_search(tmp_path):
    system, workload = capsim.SystemSpec(**SYSTEM), capsim.WorkloadSpec("chat", num_requests=256)
    slo = capsim.TbtTtft(tbt=0.1, ttft=0.4, ttft_metric="ttft")  # 256 requests judge this load
    found = capsim.search(system, workload, slo, executor="serial", cache_dir=str(tmp_path / "cache"))
    table = found.table()
    assert isinstance(table, pa.Table) and table.column_names == list(CSV_COLUMNS) and table.num_rows == 1
    assert found[0].converged and found[0].capacity_qps > 0
    found.write(tmp_path / "api")
    done = invoke(
        "search",
        *("--model", "Llama-3.1-8B", "--hardware", "H100", "--scheduler", "sarathi", "--chunk-size", 512),
        *("--max-batch-size", 128, "--trace", "chat", "-n", 256, "--tbt-slo", 0.1, "--ttft-slo", 0.4),
        *("--ttft-metric", "ttft"),
        *("--executor", "serial", "--cache-dir", tmp_path / "cache", "-o", tmp_path / "cli"),
    )
    assert done.exit_code == 0, done.output
    cli = next(csv.DictReader((tmp_path / "cli" / "capacity.csv").open()))
    api = next(csv.DictReader((tmp_path / "api" / "capacity.csv").open()))
    same = ("capacity_qps", "failing_qps", "converged", "slo_clauses", "latency_source", "deployment")
    assert {k: api[k] for k in same} == {k: cli[k] for k in same}
    assert {"capacity.csv", "capacity.json", "capacity.png"} <= {p.name for p in (tmp_path / "api").iterdir()}


def test_sweep_searches_each_value_and_refuses_a_field_the_slo_lacks(tmp_path):
    system, workload = capsim.SystemSpec(**SYSTEM), capsim.WorkloadSpec("chat", num_requests=256)
    slo = capsim.TbtTtft(ttft=0.4, ttft_metric="ttft")
    found = capsim.sweep(system, workload, slo, "tbt", [0.05, 0.2], executor="serial", cache_dir=str(tmp_path))
    tight, loose = found
    assert tight.slo["tbt"] == 0.05 and loose.slo["tbt"] == 0.2
    assert loose.capacity_qps >= tight.capacity_qps
    with pytest.raises(ConfigError, match="no 'tpot'"):
        capsim.sweep(system, workload, slo, "tpot", [0.1])


def test_search_refuses_bad_arguments_with_the_cli_words():
    system, workload = capsim.SystemSpec(**SYSTEM), capsim.WorkloadSpec("chat", num_requests=64)
    slo = capsim.TbtTtft()
    for kwargs, words in (
        (dict(granularity=2), "granularity"),
        (dict(start_qps=math.inf), "start_qps"),
        (dict(max_trials=0), "max_trials"),
        (dict(executor="threads"), "unknown executor"),
    ):
        with pytest.raises(ConfigError, match=words):
            capsim.search(system, workload, slo, **kwargs)
    with pytest.raises(ConfigError, match="give one SLO"):
        capsim.search(system, workload, "p99 tbt 0.1")
    with pytest.raises(ConfigError, match="below one decode step"):
        capsim.search(system, workload, capsim.TbtTtft(tbt=1e-4), executor="serial")


def test_plan_recommends_and_tables_every_candidate(tmp_path):
    workload = capsim.WorkloadSpec("chat", num_requests=256)
    slo = capsim.TbtTtft(tbt=0.1, ttft=0.4, ttft_metric="ttft")
    seen = []
    result = capsim.plan(
        "Llama-3.1-8B",
        workload,
        slo,
        target_qps=12,
        hardware=["H100"],
        tp=[1],
        scheduler=["sarathi"],
        chunk_size=[512, 2048],
        max_batch_size=[128],
        executor="serial",
        cache_dir=str(tmp_path / "cache"),
        progress=seen.append,
    )
    assert result.recommended is not None and result.recommended.capacity >= 12
    assert result.ranked[0] is result.recommended and seen
    table = result.table()
    assert table.column_names == list(PLAN_COLUMNS) and table.num_rows == 2
    assert set(result.write(tmp_path / "out")) <= {p.name for p in (tmp_path / "out").iterdir()}
    with pytest.raises(ConfigError, match="one of --target-qps"):
        capsim.plan("Llama-3.1-8B", workload, slo)
    with pytest.raises(ConfigError, match="unknown scheduler"):
        capsim.plan("Llama-3.1-8B", workload, slo, target_qps=1, scheduler=["fifo"])
    with pytest.raises(ConfigError, match="plan meets one SLO"):
        capsim.plan("Llama-3.1-8B", workload, [slo, slo], target_qps=1)
    space = capsearch_api.plan_space("Llama-3.1-8B", hardware=["H100"], tp=[1])
    with pytest.raises(ConfigError, match="tp would be ignored beside space="):  # never dropped silently
        capsim.plan("Llama-3.1-8B", workload, slo, target_qps=1, space=space, tp=[2])


def test_validate_replays_real_runs(tmp_path):
    pytest.importorskip("aiconfigurator_core", reason="the silicon sample ships with the kernel-db extra")
    result = capsim.validate(engine=["vllm"], model=["Qwen3-32B"], limit=3)
    table = result.table()
    assert table.num_rows == 3 and "tpot_error" in table.column_names
    assert all(row["simulated_tpot_ms"] for row in result.rows)
    assert result.groups["engine"][0]["engine"] == "vllm"
    names = {p.name for p in result.write(tmp_path / "v").iterdir()}
    assert {"validation.csv", "validation.json", "validation.png"} <= names
