"""`capsim profiles compare`: two profiles of one model, batch by batch, and their difference split
into per-step overhead, linear layers and attention."""

import json

import pytest
from click.testing import CliRunner

from capsim.capsearch.cli import main
from capsim.profiles.batch import BatchShape
from capsim.profiles.compare import compare_profiles
from capsim.profiles.models import get_model
from capsim.profiles.table import ProfileTable
from capsim.profiles.versions import profile_metadata

SHAPES = (
    [BatchShape((q,), (c,)) for q in (16, 64, 128, 256, 512, 1024, 2048) for c in (0, 512, 2048)]
    + [BatchShape(decode_contexts=(kv,) * b) for b in (1, 4, 16, 32, 64, 128) for kv in (128, 1024, 4096)]
    + [BatchShape((q,), (c,), (kv,) * b) for q in (64, 256) for c in (0, 1024) for b in (8, 32) for kv in (256, 2048)]
)


def profile(engine: str, per_step: float, per_token: float, per_attention: float, model: str = "tiny") -> ProfileTable:
    def seconds(shape: BatchShape) -> float:
        tokens, _, attention, _, _, decode_kv = shape.features()
        return per_step + per_token * tokens + per_attention * (attention + decode_kv)

    metadata = profile_metadata(get_model(model), "H100-SXM", 1, 1, engine, "measured")
    return ProfileTable.from_batches(SHAPES, [seconds(s) for s in SHAPES], metadata)


BASE = (2e-3, 4e-6, 2e-9)


@pytest.mark.parametrize(
    "extra, main_term", [((1e-3, 0, 0), "per_step"), ((0, 3e-6, 0), "linear"), ((0, 0, 3e-9), "attention")]
)
def test_the_difference_is_put_where_it_is(extra, main_term):
    first = profile("first", *BASE)
    second = profile("second", *(a + b for a, b in zip(BASE, extra)))
    result = compare_profiles(first, second)
    split = result["difference"]
    assert max(split["share"], key=split["share"].get) == main_term
    assert split["share"][main_term] > 0.8
    assert split["per_step_ms"] == pytest.approx(extra[0] * 1e3, abs=0.15)
    assert split["per_token_us"] == pytest.approx(extra[1] * 1e6, abs=0.4)
    every = result["rows"][-1]
    assert every["regime"] == "all" and every["batches"] == len(SHAPES) and every["ratio_p10"] > 1.0


def test_the_same_profile_agrees_with_itself():
    first = profile("first", *BASE)
    result = compare_profiles(first, profile("second", *BASE))
    assert all(abs(row["ratio_median"] - 1) < 0.03 for row in result["rows"])


def test_the_command_writes_its_table_and_refuses_what_it_cannot_compare(tmp_path):
    first, second, other_model = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    profile("capsim-reference", *BASE).to_parquet(first)
    profile("vllm", 3e-3, 3e-6, 3e-9).to_parquet(second)
    profile("vllm", *BASE, model="Llama-3-8B").to_parquet(other_model)
    runner = CliRunner()
    result = runner.invoke(main, ["profiles", "compare", str(first), str(second), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "ratio P50" in result.output and "a step" in result.output and "linear layers" in result.output
    written = json.loads(
        next(
            (tmp_path / "out").glob("profile-compare_tiny_H100-SXM_tp1_capsim-reference-measured_vs_*.json")
        ).read_text()
    )
    assert written["second"]["engine"] == "vllm" and written["rows"][-1]["regime"] == "all"
    for args, words in [
        ([str(first), str(other_model)], "different models"),
        ([str(first), str(second), "--engine", "sglang"], "--engine"),
        ([str(tmp_path / "missing.parquet")], "missing.parquet"),
    ]:
        refused = runner.invoke(main, ["profiles", "compare", *args])
        assert refused.exit_code == 2, refused.output
        assert words in refused.output and "Traceback" not in refused.output


@pytest.mark.parametrize(
    "damage, message",
    [
        ("metadata not JSON", "metadata is not JSON"),
        ("metadata a list", "not a mapping"),
        ("tp as text", "tp must be a whole number"),
        ("model a number", "model must be text"),
        ("tokens as text", "tokens must be numbers"),
        ("a latency missing", "latency_s must be numbers without gaps"),
        ("an unknown kind", "column kind must hold"),
    ],
)
def test_a_damaged_profile_is_refused_in_one_line(tmp_path, damage, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from capsim.profiles.store import shipped_profiles
    from capsim.profiles.table import _METADATA_KEY

    table = pq.read_table(shipped_profiles()[0])
    metadata = json.loads(table.schema.metadata[_METADATA_KEY])
    raw = {
        "metadata not JSON": b"{nope",
        "metadata a list": b"[1]",
        "tp as text": json.dumps(metadata | {"tp": "2"}).encode(),
        "model a number": json.dumps(metadata | {"model": 5}).encode(),
    }.get(damage, json.dumps(metadata).encode())
    column = {
        "tokens as text": ("tokens", pa.array([str(v) for v in table.column("tokens").to_pylist()])),
        "a latency missing": ("latency_s", pa.array([None, *table.column("latency_s").to_pylist()[1:]], pa.float64())),
        "an unknown kind": ("kind", pa.array(["weird"] * table.num_rows)),
    }.get(damage)
    if column:
        table = table.set_column(table.column_names.index(column[0]), column[0], column[1])
    pq.write_table(table.replace_schema_metadata({_METADATA_KEY: raw}), tmp_path / "bad.parquet")
    refused = CliRunner().invoke(
        main, ["profiles", "compare", str(tmp_path / "bad.parquet"), "-o", str(tmp_path / "out")]
    )
    assert refused.exit_code == 2 and message in refused.output
