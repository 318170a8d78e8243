"""capsim plan: a small space end to end, its recommendation reproduced by plain `capsim search`,
the bound that prunes never below a searched capacity, and inputs it refuses."""

import csv
import json

import pytest
import yaml
from click.testing import CliRunner

from capsim.capsearch.cli import main
from capsim.capsearch.report.plan import pareto_front

SPACE = [
    "--model",
    "Llama-3.1-8B",
    "--hardware",
    "H100,A100",
    "--tp",
    "1",
    "--scheduler",
    "sarathi",
    "--chunk-size",
    "512,2048",
    "--max-batch-size",
    "128",
    "-n",
    "256",
    "--ttft-metric",
    "ttft",
    "--ttft-slo",
    "0.4",
]  # 256 requests judge ~25 QPS at 0.4 s


def invoke(*args):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan")
    done = invoke(
        "plan", *SPACE, "--target-qps", 12, "--workers", 2, "--cache-dir", folder / "cache", "-o", folder / "out"
    )
    assert done.exit_code == 0, done.output
    return folder, done.output, list(csv.DictReader((folder / "out" / "plan.csv").open()))


def test_a_plan_ranks_every_candidate_and_recommends_one(planned):
    folder, output, rows = planned
    assert len(rows) == 4  # 2 GPUs x 2 chunks
    statuses = [r["status"] for r in rows]
    assert statuses.count("recommended") == 1
    best = next(r for r in rows if r["status"] == "recommended")
    assert float(best["capacity_qps"]) >= 12 and best["capacity_checked"] == "True"
    assert float(best["usd_per_hour"]) == pytest.approx(int(best["gpus"]) * float(best["usd_per_gpu_hour"]))
    cheaper = [
        r
        for r in rows
        if r["usd_per_hour"]
        and float(r["usd_per_hour"]) < float(best["usd_per_hour"])
        and r["capacity_checked"] == "True"
    ]
    assert not cheaper  # nothing checked is cheaper than the recommendation
    assert int(best["trials"]) > 0 and f"{best['replicas']} replica" in best["ranked_on"]  # what ranked it
    assert all(r["trials"] == "0" for r in rows if r["status"] == "cut by the bound")
    assert "vllm serve meta-llama/Llama-3.1-8B" in " ".join(output.split())
    for name in ("plan.json", "pareto.png", "capacity.png"):
        assert (folder / "out" / name).stat().st_size > 0
    info = json.loads((folder / "out" / "plan.json").read_text())["info"]
    assert info["goal"] == {"kind": "target_qps", "value": 12.0} and "P99 TBT <= 0.1 s" in info["slo"]
    script = (folder / "out" / "launch.sh").read_text()
    assert script == info["launch"] and f"--tensor-parallel-size {best['tp']}" in script
    manifests = list(yaml.safe_load_all((folder / "out" / "deployment.yaml").read_text()))
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == int(best["replicas"])  # the whole recommended deployment


def test_the_bound_never_cuts_below_a_searched_capacity(planned):
    _, _, rows = planned
    for row in rows:
        if row["capacity_per_replica"]:
            assert float(row["capacity_per_replica"]) <= float(row["upper_bound_qps"]), row


def test_plain_search_finds_the_recommended_capacity(planned):
    folder, _, rows = planned
    best = next(r for r in rows if r["status"] == "recommended")
    done = invoke(
        "search",
        "--model",
        "Llama-3.1-8B",
        "--hardware",
        best["hardware"],
        "--tp",
        best["tp"],
        "--scheduler",
        "sarathi",
        "--chunk-size",
        best["chunk_size"],
        "--max-batch-size",
        best["max_batch_size"],
        "--replicas",
        best["replicas"],
        "--trace",
        "chat",
        "-n",
        256,
        "--ttft-metric",
        "ttft",
        "--ttft-slo",
        "0.4",
        "--cache-dir",
        folder / "cache",
        "-o",
        folder / "search",
    )
    assert done.exit_code == 0, done.output
    capacity = json.loads((folder / "search" / "capacity.json").read_text())[0]["capacity_qps"]
    assert capacity == pytest.approx(float(best["capacity_qps"]))


def test_most_capacity_on_a_gpu_count(tmp_path):
    done = invoke("plan", *SPACE, "--gpus", 2, "--cache-dir", tmp_path / "cache", "-o", tmp_path / "out")
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader((tmp_path / "out" / "plan.csv").open()))
    best = next(r for r in rows if r["status"] == "recommended")
    assert int(best["gpus"]) <= 2
    assert all(float(best["capacity_qps"]) >= float(r["capacity_qps"]) for r in rows if r["capacity_checked"] == "True")


def test_a_plan_on_a_local_ray_gives_the_same_recommendation(planned, tmp_path):
    pytest.importorskip("ray")
    folder, _, rows = planned
    done = invoke(
        "plan",
        *SPACE,
        "--target-qps",
        12,
        "--executor",
        "ray",
        "--workers",
        2,
        "--cache-dir",
        folder / "cache",
        "-o",
        tmp_path / "ray",
    )
    assert done.exit_code == 0, done.output
    again = list(csv.DictReader((tmp_path / "ray" / "plan.csv").open()))

    def pick(table):
        return next(
            (r["hardware"], r["chunk_size"], r["replicas"], r["capacity_qps"])
            for r in table
            if r["status"] == "recommended"
        )

    assert pick(again) == pick(rows)


def test_the_pareto_front():
    points = [(1.0, 5.0), (2.0, 4.0), (2.0, 9.0), (3.0, 9.0), (4.0, 12.0)]
    assert pareto_front(points) == [0, 2, 4]


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "one of --target-qps"),
        (["--target-qps", "5", "--gpus", "4"], "one of --target-qps"),
        (["--target-qps", "5", "--hardware", "A40"], "no price for A40"),
        (["--target-qps", "5", "--hardware", "Z9"], "unknown hardware"),
        (["--target-qps", "5", "--scheduler", "fastest"], "unknown scheduler"),
        (["--target-qps", "5", "--tp", "two"], "whole numbers"),
        (["--target-qps", "5", "--ray-address", "127.0.0.1:9"], "add --executor ray"),
    ],
)
def test_plans_that_cannot_be_made_are_refused(args, words, tmp_path):
    done = invoke("plan", "--model", "Llama-3.1-8B", *args, "-o", tmp_path / "x")
    assert done.exit_code == 2 and words in done.output, done.output
    assert not (tmp_path / "x").exists()


def test_prices_and_space_files(tmp_path):
    (tmp_path / "prices.yml").write_text("A40: 0.4\nH100: 9\n")
    (tmp_path / "space.yml").write_text(
        "hardware: [A40]\ntp: [1]\nscheduler: [sarathi]\nchunk_size: [512]\nmax_batch_size: [64]\n"
    )
    done = invoke(
        "plan",
        "--model",
        "Llama-3.1-8B",
        "--target-qps",
        1,
        "-n",
        64,
        "--prices",
        tmp_path / "prices.yml",
        "--space",
        tmp_path / "space.yml",
        "--cache-dir",
        tmp_path / "cache",
        "-o",
        tmp_path / "out",
    )
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader((tmp_path / "out" / "plan.csv").open()))
    assert [(r["hardware"], float(r["usd_per_gpu_hour"])) for r in rows] == [("A40", 0.4)]
    twice = invoke(
        "plan",
        "--model",
        "Llama-3.1-8B",
        "--target-qps",
        1,
        "--tp",
        1,
        "--space",
        tmp_path / "space.yml",
        "-o",
        tmp_path / "y",
    )
    assert twice.exit_code == 2 and "given twice" in twice.output
    (tmp_path / "bad.yml").write_text("H100: cheap\n")
    bad = invoke(
        "plan", "--model", "Llama-3.1-8B", "--target-qps", 1, "--prices", tmp_path / "bad.yml", "-o", tmp_path / "z"
    )
    assert bad.exit_code == 2 and "positive number of dollars" in bad.output


def test_a_long_trace_is_screened_on_short_trials_and_ranked_on_full_ones(tmp_path):
    """With 1024 requests the candidates are screened on 256-request trials; only full searches
    rank: the recommended deployment's row names its full trials, and a cut says why."""
    done = invoke(
        "plan",
        *SPACE[:-6],  # the space, without -n and the TTFT limit
        *("-n", 1024, "--ttft-metric", "ttft", "--ttft-slo", 1.0, "--target-qps", 12, "--executor", "serial"),
        *("--cache-dir", tmp_path / "cache", "-o", tmp_path / "out"),
    )
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader((tmp_path / "out" / "plan.csv").open()))
    ranked = [r for r in rows if r["status"] in ("recommended", "runner-up")]
    assert ranked and all("1 replica:" in r["ranked_on"] and "of 1024 requests" in r["ranked_on"] for r in ranked)
    assert any("of 256 requests" in r["ranked_on"] for r in rows)  # the screen's trials, said
    for r in rows:
        if r["status"] == "cut by the bound":
            assert "cannot beat" in r["why"]
