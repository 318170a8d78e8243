"""Each run writes a folder of its own, as a set, in strict JSON."""

import json
import math

import pytest
from click.testing import CliRunner

from capsim.capsearch.cli import main
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.report.results_dir import ResultSet, results_dir
from capsim.common.files import strict_dumps

SIMULATE = ["simulate", "--model", "Mistral-7B", "--hardware", "A100", "--qps", "2", "-n", "50"]


def run(args, cwd=None):
    return CliRunner().invoke(main, [*map(str, args)])


def test_every_run_gets_a_new_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = run(SIMULATE), run(SIMULATE)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    folders = sorted((tmp_path / "capsim-results" / "simulate").iterdir())
    assert len(folders) == 2 and all((f / "summary.json").is_file() for f in folders)
    assert str(folders[0].relative_to(tmp_path)) in first.output


def test_a_folder_that_holds_results_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "out"
    assert run([*SIMULATE, "-o", out]).exit_code == 0
    before = (out / "summary.json").read_bytes()
    refused = run([*SIMULATE, "--qps", "3", "-o", out])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert (out / "summary.json").read_bytes() == before
    replaced = run([*SIMULATE, "--qps", "3", "-o", out, "--overwrite"])
    assert replaced.exit_code == 0 and (out / "summary.json").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or replaced folder left


def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "capacity.json").write_text("old")
    with pytest.raises(RuntimeError):
        with ResultSet(folder) as staging:
            (staging / "capacity.json").write_text("new")
            raise RuntimeError("the plot failed")
    assert (folder / "capacity.json").read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        results_dir(tmp_path / "f", "search", overwrite=True)
    bad = run([*SIMULATE, "-o", tmp_path / "f" / "sub"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_json_is_strict_with_a_reason_for_each_null():
    text = strict_dumps({"capacity_qps": math.nan, "failing_qps": math.inf, "rows": [{"p99": math.nan}], "ok": 1.5})
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    assert data["capacity_qps"] is None and data["failing_qps"] is None and data["ok"] == 1.5
    assert set(data["why_null"]) == {"capacity_qps", "failing_qps"} and data["rows"][0]["p99"] is None


def test_a_confirmation_where_nothing_passed_or_was_measured_still_writes_its_report(tmp_path):
    from capsim.capsearch.capacity.confirm import Confirmation
    from capsim.capsearch.report.confirm import plot_confirmation, write_confirmation

    nothing = [
        {"metric": m, "percentile": p, "predicted_s": 0.05, "measured_s": math.nan, "error": math.nan}
        for m in ("ttft", "tbt")
        for p in (50, 99)
    ]
    confirmation = Confirmation(
        slo={},
        slo_name="P99 TBT<=0.1s",
        predicted_qps=2.0,
        measured_qps=None,
        failing_qps=2.0,
        trials=[{"qps": 2.0, "passed": False}],
        percentiles=nothing,
        compared_at_qps=2.0,
    )
    plot_confirmation(confirmation, tmp_path / "confirm.png")
    data = json.loads(write_confirmation(confirmation, tmp_path).read_text())
    assert (tmp_path / "confirm.png").stat().st_size > 1000
    assert data["measured_qps"] is None and data["capacity_error"] is None
    assert data["percentiles"][0]["measured_s"] is None and "measured_s" in data["percentiles"][0]["why_null"]


def test_a_confirmation_that_never_failed_gives_its_error_as_a_bound():
    from rich.console import Console

    from capsim.capsearch.capacity.confirm import Confirmation
    from capsim.capsearch.report.confirm import confirmation_tables

    def capacity_row(failing):
        confirmation = Confirmation(
            slo={},
            slo_name="P99 TBT<=0.1s",
            predicted_qps=10.0,
            measured_qps=12.0,
            failing_qps=failing,
            trials=[{"qps": 12.0, "passed": True}],
            compared_at_qps=12.0,
            predicted_outcome="simulated search: converged",
        )
        console = Console(width=200, record=True)
        console.print(confirmation_tables(confirmation)[0])
        return console.export_text()

    assert "<= -16.7%" in capacity_row(None) and "predicted: simulated search: converged" in capacity_row(None)
    assert "-16.7%" in capacity_row(12.5) and "<= -16.7%" not in capacity_row(
        12.5
    )  # simulated against measured, as latencies


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    from capsim.capsearch.report.results_dir import MARKER, release

    monkeypatch.chdir(tmp_path)
    folders = [results_dir(None, "simulate", overwrite=False) for _ in range(3)]
    assert len(set(folders)) == 3 and all((f / MARKER).is_file() for f in folders)
    for folder in folders:
        release(folder)  # a run that wrote nothing leaves nothing
    assert not any((tmp_path / "capsim-results" / "simulate").iterdir())


def test_overwrite_replaces_only_what_capsim_wrote(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    (out / "src" / "main.py").write_text("print()")
    (out / "notes.md").write_text("mine")
    for flags in ([], ["--overwrite"]):
        refused = run([*SIMULATE, "-o", out, *flags])
        assert refused.exit_code == 2 and "capsim did not write" in refused.output and "notes.md" in refused.output
    assert (out / "notes.md").read_text() == "mine" and (out / "src" / "main.py").is_file()
    ours = tmp_path / "ours"
    assert run([*SIMULATE, "-o", ours]).exit_code == 0
    (ours / "my-notes.md").write_text("added by hand")
    refused = run([*SIMULATE, "-o", ours, "--overwrite"])
    assert refused.exit_code == 2 and "my-notes.md" in refused.output and (ours / "my-notes.md").is_file()
    monkeypatch.chdir(ours)
    (ours / "my-notes.md").unlink()
    here = run([*SIMULATE, "-o", ".", "--overwrite"])
    assert here.exit_code == 2 and "current folder" in here.output and "Traceback" not in here.output


def test_commands_that_write_one_file_never_write_over_their_input_or_another_file(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n10,5\n20,8\n")
    before = trace.read_bytes()
    for output in (trace, tmp_path / "other.csv"):
        refused = run(["traces", "convert", trace, "-o", output, "--overwrite"])
        assert refused.exit_code == 2, refused.output
    assert trace.read_bytes() == before
    parquet = tmp_path / "t.parquet"
    assert run(["traces", "convert", trace, "-o", parquet]).exit_code == 0
    again = run(["traces", "convert", trace, "-o", parquet])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert run(["traces", "convert", trace, "-o", parquet, "--overwrite"]).exit_code == 0
    onto_input = run(["traces", "convert", parquet, "-o", parquet, "--overwrite"])
    assert onto_input.exit_code == 2 and "is the input" in onto_input.output


def test_profile_reports_go_to_a_results_folder_of_their_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["profiles", "report", "--model", "Llama-3.1-8B", "--hardware", "H100-SXM"]
    first, second = run(args), run(args)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    folders = sorted((tmp_path / "capsim-results" / "profiles-report").iterdir())
    assert len(folders) == 2 and all(len(list(f.glob("latency-model_*.png"))) == 1 for f in folders)
