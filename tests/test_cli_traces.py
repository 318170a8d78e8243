"""The `capsim traces` commands, run as a user runs them: the installed console script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from capsim.traces import load_trace

CAPSIM = str(Path(sys.executable).parent / "capsim")


def capsim(*args, check=True):
    result = subprocess.run([CAPSIM, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_list_and_show_builtin(tmp_path):
    listed = capsim("traces", "list").stdout
    for name in ("chat", "arxiv", "arxiv4k", "bwb", "azure-code", "azure-conv"):
        assert name in listed
    shown = capsim("traces", "show", "chat", "--json", tmp_path / "chat.json").stdout
    assert "prompt" in shown and "output" in shown
    figures = json.loads((tmp_path / "chat.json").read_text())
    assert figures["requests"] == 10_000
    assert figures["prompt_tokens"]["p50"] == pytest.approx(1730, rel=0.05)


def test_sample_then_show_then_convert_round_trip(tmp_path):
    out = tmp_path / "chat.parquet"
    capsim("traces", "sample", "chat", "--qps", 3, "-n", 400, "--seed", 4, "-o", out)
    w = load_trace(out)
    assert len(w) == 400 and w.has_arrivals
    assert "arrivals:" in capsim("traces", "show", out).stdout
    again = tmp_path / "again.parquet"
    capsim("traces", "convert", out, "-o", again)
    assert load_trace(again).table.equals(w.table)


def test_show_a_reference_file(reference_traces):
    shown = capsim("traces", "show", reference_traces / "splitwise_conv.csv").stdout
    assert "19366 requests" in shown and "QPS" in shown


@pytest.mark.parametrize(
    "args, message",
    [
        (["traces", "show", "nosuch"], "neither a trace file nor a built-in trace"),
        (["traces", "sample", "chat", "--qps", "0", "-o", "{out}"], "QPS must be a positive"),
        (["traces", "sample", "chat", "--qps", "1", "--arrival", "gamma", "-o", "{out}"], "--cv"),
        (["traces", "convert", "{bad}", "-o", "{out}"], "line 3, column 'num_decode_tokens'"),
        (["traces", "sample", "{bad}", "--qps", "1", "-o", "{out}"], "line 3"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line_and_writes_nothing(tmp_path, args, message):
    bad = tmp_path / "bad.csv"
    bad.write_text("num_prefill_tokens,num_decode_tokens\n10,1\n20,x\n")
    out = tmp_path / "out.parquet"
    result = capsim(*[a.format(out=out, bad=bad) for a in args], check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]
