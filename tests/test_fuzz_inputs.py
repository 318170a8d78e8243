"""Fuzzing the trace loaders and the config loader: any input gives a valid workload or config,
or one clear line (TraceError / ConfigError, exit 2 on the command line); never a traceback."""

import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsim.capsearch.cli import main
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.experiments.config import load_config
from capsim.traces import TraceError, load_trace

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "abc", "1e30", "12", "3.5", "-1", "0", "nan", "inf", "0x10", "1,5", '"']),
)
junk_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
cell = st.one_of(numbers.map(str), junk_text)


def loaded_or_refused(path):
    """The loader's answer: a workload it vouches for, or None after one clear line."""
    try:
        workload = load_trace(path)
    except TraceError as error:
        assert str(error) and "\n" not in str(error) and "Traceback" not in str(error)
        return None
    prompt, output = workload.prompt_tokens, workload.output_tokens
    assert (
        len(prompt)
        and (prompt >= 1).all()
        and (output >= 1).all()
        and (prompt < 2**31).all()
        and (output < 2**31).all()
    )
    if workload.has_arrivals:
        arrivals = workload.arrival_s
        assert np.isfinite(arrivals).all() and (np.diff(arrivals) >= 0).all()
    return workload


@FUZZ
@given(
    rows=st.lists(st.lists(cell, min_size=1, max_size=4), max_size=6),
    bom=st.booleans(),
    header=st.sampled_from(
        [
            "num_prefill_tokens,num_decode_tokens",
            "num_prefill_tokens,num_decode_tokens,arrived_at",
            "ContextTokens,GeneratedTokens,TIMESTAMP",
            "Request tokens,Response tokens,Timestamp",
            "a,b",
        ]
    ),
)
def test_csv_traces(tmp_path, rows, bom, header):
    path = tmp_path / "trace.csv"
    body = header + "\n" + "\n".join(",".join(row) for row in rows) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8", errors="surrogatepass"))
    loaded_or_refused(path)


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, junk_text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(junk_text, inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "timestamp": json_value,
                "input_length": json_value,
                "output_length": json_value,
                "hash_ids": json_value,
            },
        ),
        max_size=5,
    ),
    raw_tail=st.sampled_from(["", "{", "[1, 2]", "null", '"x"', '{"timestamp": 1e999}']),
)
def test_mooncake_traces(tmp_path, records, raw_tail):
    def dump(record):
        return json.dumps(record, default=str).replace("NaN", "0").replace("Infinity", "1e999")

    text = "".join(dump(r) + "\n" for r in records) + raw_tail
    path = tmp_path / "trace.jsonl"
    path.write_text(
        "{" + text[1:] if text.startswith("{") else '{"timestamp": 0, "input_length": 1, "output_length": 1}\n' + text
    )
    loaded_or_refused(path)


@FUZZ
@given(
    prompt=st.lists(
        st.one_of(st.integers(-5, 2**40), st.floats(allow_nan=True, allow_infinity=True)), min_size=1, max_size=5
    ),
    arrivals=st.booleans(),
    metadata=st.sampled_from([None, b"{", b"[]", b'{"qps": 1}', b"\xff"]),
    prefix=st.booleans(),
    cut=st.integers(0, 400),
)
def test_parquet_traces(tmp_path, prompt, arrivals, metadata, prefix, cut):
    columns = {"prompt_tokens": pa.array(prompt, pa.float64()), "output_tokens": pa.array([5.0] * len(prompt))}
    if arrivals:
        columns["arrival_s"] = pa.array(sorted(abs(p) if math.isfinite(p) else p for p in map(float, prompt)))
    if prefix:
        columns["prefix_group"] = pa.array([1.5] * len(prompt))
        columns["prefix_tokens"] = pa.array([2] * len(prompt))
    table = pa.table(columns)
    if metadata is not None:
        table = table.replace_schema_metadata({b"capsim.workload": metadata})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    path = tmp_path / "trace.parquet"
    path.write_bytes(data[: len(data) - cut] if cut else data)  # a cut file: truncated in the footer
    loaded_or_refused(path)


BASE = yaml.safe_load("""
schedulers: [{name: sarathi, scheduler: sarathi, chunk_size: 512, batch_size: 128}]
traces: [{name: chat, trace_file: chat, max_seq_len: 8192, num_requests: 64, start_qps: 1}]
parallel_spec: [{name: tp_1, tp_dimension: 1, pp_dimension: 1}]
models: [{name: mistral-7b, identifier: mistralai/Mistral-7B-Instruct-v0.2}]
""")
WHERE = (
    [("schedulers", k) for k in ("name", "scheduler", "chunk_size", "batch_size")]
    + [("traces", k) for k in ("name", "trace_file", "max_seq_len", "num_requests", "start_qps", "arrival", "cv")]
    + [("parallel_spec", k) for k in ("name", "tp_dimension", "pp_dimension")]
    + [("models", k) for k in ("name", "identifier", "parallel_specs", "scheduler_specs", "traces")]
    + [
        (None, k)
        for k in (
            "hardware",
            "granularity",
            "seed",
            "replicas",
            "slos",
            "num_kv_blocks",
            "memory_utilization",
            "max_trials",
            "shuffle",
            "block_size",
            "schedulers",
            "models",
        )
    ]
)


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(WHERE), json_value), min_size=1, max_size=3))
def test_osdi_configs(tmp_path, changes):
    data = json.loads(json.dumps(BASE))
    for (section, key), value in changes:
        (data if section is None else data[section][0])[key] = value
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    try:
        experiment = load_config(path)
    except ConfigError as error:
        assert str(error) and "Traceback" not in str(error)
        return
    for job in experiment.jobs:
        assert isinstance(job.system.tp, int) and job.system.tp >= 1 and isinstance(job.system.max_batch_size, int)
        assert 0 < job.granularity < 1 and 0 < job.start_qps < math.inf and job.slos


@pytest.mark.parametrize("text", ["", "[1, 2]", "schedulers: 5", "{unclosed", "models: [{name: x}]", "\t- bad"])
def test_bad_configs_on_the_command_line_give_one_line_and_exit_2(tmp_path, text):
    path = tmp_path / "c.yml"
    path.write_text(text)
    result = CliRunner().invoke(
        main, ["search", "--config-path", str(path), "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()
