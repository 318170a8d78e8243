"""The closed loop on CPU: profile `tiny` with the reference engine's own model runner, fit the
latency model, find the simulated capacity, serve `tiny` with the reference engine on loopback,
confirm on it, and check that predicted and measured capacity agree.

What is held to the tolerance is the prediction at the engine's measured step times (its batch
log against its profile, confirm.at_engine_speed): the simulator's own error. The error from the
profile alone adds the profile's drift on this machine now: on a shared 2-core CI machine, where
the load generator and the HTTP frontend take CPU from the engine, its steps once ran 40-50%
slower than the profile measured alone, and that error reached 31%.

Tolerance: 30%. The confirmation's first step is 20% (a first trial that fails at the predicted
capacity already puts the measurement 0-20% below it), and the quick grid's latency model has a
held-out MAPE of about 10% on this CPU, which near capacity moves queueing delays by more. Errors
beyond that mean engine and simulator disagree on more than noise: before decode attention cost
the sum of KV lengths, the engine padded every decode to the longest and measured 42% below the
prediction, and this test failed.
"""

import dataclasses
import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")

TOLERANCE = 0.30
CAPSIM = [sys.executable, "-m", "capsim.capsearch.cli"]
SYSTEM = [
    "--model",
    "tiny",
    "--hardware",
    "cpu",
    "--scheduler",
    "sarathi",
    "--chunk-size",
    "256",
    "--max-batch-size",
    "16",
    "--num-kv-blocks",
    "1024",
]
WORKLOAD = ["--trace", "chat", "-n", "512", "--max-total-tokens", "512", "--output-scale", "0.5"]
SLO = ["--tbt-slo-value", "0.1", "--scheduling-delay-slo-value", "1"]  # P99 TBT, P50 delay (TTFT to a client)


@pytest.fixture(scope="module")
def profile(tiny_cpu_profile):
    """The reference engine's step latencies on this CPU: what the simulation runs on (conftest)."""
    return tiny_cpu_profile


@pytest.mark.slow
def test_predicted_capacity_holds_on_the_reference_engine(tmp_path, profile):
    run = subprocess.run(
        [
            *CAPSIM,
            "confirm",
            *SYSTEM,
            "--profile",
            str(profile),
            "--dtype",
            "float32",
            *WORKLOAD,
            *SLO,
            "-o",
            str(tmp_path / "confirm"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "confirm" / "confirm.json").read_text())
    print(run.stdout)  # the table, for the log
    assert result["latency_source"].startswith("measured: capsim's reference engine")
    assert result["slo"]["ttft_metric"] == "ttft"  # what a client can see
    # 512 requests judge ~20 QPS at P50 TTFT <= 1 s (96 did not: their short bursts passed at twice the load)
    outcome = "simulated search: converged"
    assert result["predicted_outcome"] == outcome and f"({outcome})" in " ".join(run.stdout.split())
    assert 1 <= len(result["trials"]) <= 4
    assert result["measured_qps"] > 0, result["trials"]
    # The engine's step times against its profile: the drift of the profile on this machine now
    speed = result["engine_speed"]
    assert speed["batches"] > 100 and 0.5 < speed["step_time_ratio"] < 2, speed
    assert (tmp_path / "confirm" / "batches.parquet").is_file() and (tmp_path / "confirm" / speed["profile"]).is_file()
    assert abs(result["capacity_error_at_engine_speed"]) <= TOLERANCE, result
    for row in result["percentiles"]:
        assert row["predicted_s"] > 0 and row["measured_s"] > 0
    assert (tmp_path / "confirm" / "confirm.png").stat().st_size > 0
    assert any((tmp_path / "confirm" / "trials").iterdir())


CURVE_TOLERANCE = {
    "request_throughput": 0.20,
    "median_ttft_ms": 0.35,
    "median_tpot_ms": 0.35,
    "median_itl_ms": 0.35,
    "median_e2el_ms": 0.35,
}


@pytest.mark.slow
def test_simulated_and_measured_load_curves_agree(tmp_path, profile):
    """The same deployment at three loads, simulated and measured on the reference engine, then
    the simulation replaying the measured folder (`simulate --against`), laid over each other as
    `capsim compare` does. As in the capacity test above, the replay runs at the step times the
    engine ran at during the bench (its batch log against the profile): the simulator's own error,
    not the profile's drift on a busy machine (once +43% on TTFT at 16 QPS, every load slower).
    Tolerance: medians of TTFT, TPOT, ITL and E2E within 35% (30 requests a load; the quick
    grid's model is ~10% off a batch); request throughput within 20%: it is completed requests
    over first send to last response, and at 16 QPS the 30 arrivals span 1.9 s, so the last
    requests' E2E (within 35%) is a third of that time."""
    from capsim.capsearch.capacity.confirm import profile_at_engine_speed
    from capsim.real.process import free_port
    from capsim.real.reference import engine_system, reference_server
    from capsim.sim import SystemSpec

    loads = ["--qps", "3,8,16", "-n", "30", "--max-total-tokens", "512", "--output-scale", "0.5"]
    deployment = SystemSpec(  # SYSTEM's flags
        model="tiny", hardware="cpu", scheduler="sarathi", token_budget=256, max_batch_size=16, num_kv_blocks=1024
    )
    system = engine_system(deployment, "cpu", "float32")
    port = free_port()
    batch_log = tmp_path / "batches.parquet"
    server = reference_server(system, port, str(tmp_path / "engine.log"), "cpu", "float32", batch_log=str(batch_log))
    server.start()
    try:
        measured = subprocess.run(
            [*CAPSIM, "bench", "--endpoint", server.url, *loads, "--save-result", "-o", str(tmp_path / "real")],
            capture_output=True,
            text=True,
        )
    finally:
        server.stop()
    assert measured.returncode == 0, measured.stdout + measured.stderr
    simulated_system = dataclasses.replace(deployment, engine="reference", profile=str(profile))
    speed = profile_at_engine_speed(simulated_system, batch_log, tmp_path, "the bench")
    print(speed)  # the profile's drift on this machine now, for the log
    assert speed["batches"] > 100 and 0.5 < speed["step_time_ratio"] < 2, speed
    simulated = subprocess.run(  # the bench folder's own requests and loads, replayed
        [
            *CAPSIM,
            "simulate",
            *SYSTEM,
            "--engine",
            "reference",
            "--profile",
            str(tmp_path / speed["profile"]),
            "--against",
            str(tmp_path / "real"),
            "-o",
            str(tmp_path / "sim"),
        ],
        capture_output=True,
        text=True,
    )
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    print(simulated.stdout)  # the error table, for the log
    result = json.loads((tmp_path / "sim" / "compare.json").read_text())
    assert result["reference"] == "measured: real" and result["same_deployment"]
    rows = result["errors"]["simulated: sim"]
    assert [r["load"] for r in rows] == ["3 QPS", "8 QPS", "16 QPS"]
    compared = subprocess.run(
        [*CAPSIM, "compare", str(tmp_path / "sim"), str(tmp_path / "real"), "-o", str(tmp_path / "cmp")],
        capture_output=True,
        text=True,
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["errors"] == result["errors"]
    real_rows = json.loads((tmp_path / "real" / "load_sweep.json").read_text())["loads"]
    sim_rows = {r["load"]: r for r in json.loads((tmp_path / "sim" / "load_sweep.json").read_text())["loads"]}
    for real in real_rows:
        assert real["failed"] == 0, real
        for key, tolerance in CURVE_TOLERANCE.items():
            error = (sim_rows[real["load"]][key] - real[key]) / real[key]
            assert abs(error) <= tolerance, (real["load"], key, error)
    assert len(list((tmp_path / "real").glob("capsim-real-*qps-tiny-*.json"))) == 3
    assert (tmp_path / "cmp" / "compare_ttft.png").stat().st_size > 0
