import json

import numpy as np
import pytest

from capsim.traces import TraceError, Workload, load_trace
from capsim.traces.loaders import detect_format


def write(path, text):
    path.write_text(text)
    return path


def test_sarathi_csv_from_the_reference_files(reference_traces):
    chat = load_trace(reference_traces / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv")
    assert len(chat) == 30731
    assert not chat.has_arrivals
    assert np.median(chat.prompt_tokens) == 1730
    assert (chat.prompt_tokens + chat.output_tokens).max() <= 8192
    code = load_trace(reference_traces / "splitwise_code.csv")
    assert len(code) == 8819 and code.has_arrivals
    assert code.arrival_s[0] == 0 and (np.diff(code.arrival_s) >= 0).all()
    assert code.info["format"] == "sarathi"


def test_azure_csv_parses_datetimes_with_and_without_zone(tmp_path):
    a = write(
        tmp_path / "azure2023.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n",
    )
    w = load_trace(a)
    assert detect_format(a) == "azure"
    assert w.arrival_s == pytest.approx([0.0, 4.314579])
    assert list(w.prompt_tokens) == [374, 396] and list(w.output_tokens) == [44, 109]
    b = write(
        tmp_path / "azure2024.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.009930+00:00,100,10\n2024-05-10 00:00:02.009930+00:00,200,20\n",
    )
    assert load_trace(b).arrival_s == pytest.approx([0.0, 2.0])


def test_burstgpt_skips_and_counts_failed_requests(tmp_path):
    path = write(
        tmp_path / "burst.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,0,1087,Conversation log\n"
        "118,GPT-4,417,276,693,API log\n",
    )
    w = load_trace(path)
    assert list(w.prompt_tokens) == [472, 417]
    assert w.arrival_s == pytest.approx([0, 113])
    assert w.info["skipped_failed_requests"] == 1


def test_mooncake_shared_leading_hash_ids_become_prefix_groups(tmp_path):
    lines = [
        {"timestamp": 0, "input_length": 1200, "output_length": 10, "hash_ids": [1, 2, 3]},
        {"timestamp": 500, "input_length": 1100, "output_length": 5, "hash_ids": [1, 2, 4]},
        {"timestamp": 1500, "input_length": 300, "output_length": 7, "hash_ids": [9]},
        {"timestamp": 2000, "input_length": 700, "output_length": 7, "hash_ids": [1, 5]},
    ]
    path = write(tmp_path / "mooncake.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    w = load_trace(path)
    assert w.arrival_s == pytest.approx([0, 0.5, 1.5, 2.0])
    groups = w.table.column("prefix_group").to_pylist()
    shared = w.table.column("prefix_tokens").to_pylist()
    assert groups == [2, 2, -1, 1]
    assert shared == [1024, 1024, 0, 512]


def test_unsorted_timestamps_are_replayed_in_arrival_order(tmp_path):
    path = write(tmp_path / "t.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n2.0,20,2\n1.0,10,1\n3.0,30,3\n")
    w = load_trace(path)
    assert list(w.prompt_tokens) == [10, 20, 30]
    assert list(w.arrival_s) == [0.0, 1.0, 2.0]


def test_parquet_round_trip_keeps_every_column(tmp_path):
    w = Workload.from_arrays(
        [5, 6], [7, 8], [0.0, 0.25], prefix_group=[3, -1], prefix_tokens=[4, 0], info={"source": "x"}
    )
    out = w.to_parquet(tmp_path / "w.parquet")
    back = load_trace(out)
    assert back.table.equals(w.table)
    assert back.info["source"] == "x"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "num_prefill_tokens,num_decode_tokens\n10,1\n20,abc\n",
            ["line 3", "'num_decode_tokens'", "'abc' is not a number"],
        ),
        ("num_prefill_tokens,num_decode_tokens\n10,1\n0,4\n", ["line 3", "'num_prefill_tokens'", "positive"]),
        ("num_prefill_tokens,num_decode_tokens\n10,1\n-5,4\n", ["line 3", "positive"]),
        ("num_prefill_tokens,num_decode_tokens\n10,1\n2.5,4\n", ["line 3", "whole number"]),
        ("num_prefill_tokens,num_decode_tokens\n10,1\n,4\n", ["line 3", "empty"]),
        ("num_prefill_tokens,num_decode_tokens\n10,1\n20,2\n3", ["line 4", "truncated"]),
        ("num_prefill_tokens,num_decode_tokens\n", ["no requests"]),
        ("", ["empty"]),
        ("prompt,answer\n1,2\n", ["unknown trace format", "--format"]),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\nsoon,2,2\n", ["line 3", "'arrived_at'", "'soon'"]),
    ],
)
def test_bad_csv_names_file_line_and_column(tmp_path, text, expected):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(TraceError) as error:
        load_trace(path)
    message = str(error.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_forced_format_names_the_missing_column(tmp_path):
    path = write(tmp_path / "t.csv", "num_prefill_tokens,num_decode_tokens\n1,1\n")
    with pytest.raises(TraceError, match="missing column 'ContextTokens' for the azure format"):
        load_trace(path, format="azure")
    with pytest.raises(TraceError, match="unknown trace format 'excel'"):
        load_trace(path, format="excel")


def test_bad_mooncake_and_parquet(tmp_path):
    truncated = write(
        tmp_path / "m.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 3, "inp'
    )
    with pytest.raises(TraceError, match="line 2 is not valid JSON"):
        load_trace(truncated)
    missing = write(tmp_path / "m2.jsonl", '{"timestamp": 0, "input_length": 5}\n')
    with pytest.raises(TraceError, match="line 1 lacks the field 'output_length'"):
        load_trace(missing)
    good = Workload.from_arrays([1, 2], [3, 4]).to_parquet(tmp_path / "w.parquet")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(TraceError, match="not a readable Parquet file"):
        load_trace(cut)


def test_missing_file():
    with pytest.raises(TraceError, match="no such file"):
        load_trace("/nonexistent/trace.csv")
