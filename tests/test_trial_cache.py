"""The trial cache: compact entries that score exactly as the trial did, damage survived, pruning."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from capsim.capsearch.capacity.cache_folder import parse_age, parse_size, prune, scan
from capsim.capsearch.capacity.slo import Deadline, TbtTtft, TtftTpot
from capsim.capsearch.capacity.trials import TrialCache, run_trial, trial_key
from capsim.capsearch.errors import ConfigError
from capsim.sim import SystemSpec, simulate
from capsim.sim.compact import CompactError, read_compact, write_compact
from capsim.sim.result import RunResult
from capsim.traces import WorkloadSpec

CAPSIM = str(Path(sys.executable).parent / "capsim")
WORKLOAD = WorkloadSpec("chat", num_requests=400, seed=3, max_total_tokens=4096)


def same_requests(a, b) -> bool:
    """Equal column by column, bit for bit, NaN where NaN (Arrow's equals counts NaN as unequal)."""
    if a.requests.column_names != b.requests.column_names:
        return False
    columns = [n for n in a.requests.column_names if n != "token_times"]
    return all(
        np.array_equal(a.column(n), b.column(n), equal_nan=a.column(n).dtype.kind == "f") for n in columns
    ) and all(np.array_equal(x, y) for x, y in zip(a.token_times, b.token_times))


@pytest.mark.parametrize(
    "system, qps",
    [
        (SystemSpec(model="Mistral-7B", hardware="A100-80GB-SXM", scheduler="sarathi", token_budget=512), 6.0),
        (
            SystemSpec(
                model="Mistral-7B", hardware="A100-80GB-SXM", scheduler="vllm_v0", replicas=2, num_kv_blocks=600
            ),
            30.0,
        ),
        (
            SystemSpec(
                model="Llama-2-70B", hardware="A100-80GB-SXM", tp=4, pp=2, scheduler="sarathi", token_budget=512
            ),
            3.0,
        ),
    ],
)
def test_the_compact_form_gives_back_the_same_trial_bit_for_bit(tmp_path, system, qps):
    result = simulate(system, WORKLOAD.at_qps(qps), time_limit_s=40.0)  # some requests unfinished, some preempted
    write_compact(result, tmp_path / "t")
    back = read_compact(tmp_path / "t")
    assert same_requests(back, result) and back.info == result.info
    timeline, index = result.token_timeline  # the simulator places each token on its iteration: no sort
    assert np.array_equal(timeline[index] / 1e6, result.token_times[0])
    write_compact(RunResult(result.requests, None, result.info), tmp_path / "u")  # a result without: sorted
    assert same_requests(read_compact(tmp_path / "u"), result)
    for slo in (TbtTtft(tbt=0.05), TtftTpot(ttft=1.0, tpot=0.03), Deadline(tbt=0.03, ttft_slack=0.3)):
        assert slo.score(back) == slo.score(result)


def test_an_entry_of_the_first_format_still_reads_as_its_trial():
    """Entries written before the token steps and timeline were kept as exceptions
    (capsim-compact-trial/1, by the commit before it) keep a cache warm across the upgrade."""
    system = SystemSpec(
        model="Mistral-7B", hardware="A100-80GB-SXM", scheduler="vllm_v0", replicas=2, num_kv_blocks=600
    )
    workload = WorkloadSpec("chat", num_requests=160, seed=3, max_total_tokens=4096)
    result = simulate(system, workload.at_qps(30.0), time_limit_s=12.0)  # 2 replicas, preemptions, most unfinished
    back = read_compact(Path(__file__).parent / "data" / "trial_format1.parquet", "v1-fixture")
    assert same_requests(back, result) and back.info == result.info


def test_a_trial_entry_is_small(tmp_path):
    system = SystemSpec(model="Mistral-7B", hardware="A100-80GB-SXM", scheduler="sarathi", token_budget=512)
    workload = WorkloadSpec("chat", num_requests=2048, seed=42)
    run_trial(system, workload, 6.0, TrialCache(tmp_path))
    (entry,) = tmp_path.glob("*.trial.parquet")
    assert entry.stat().st_size < 100_000  # the full form, every token time, is ~1.2 MB
    assert stat.S_IMODE(entry.stat().st_mode) & 0o044 == 0o044  # group and others may read a shared cache


def test_a_damaged_entry_is_simulated_again_and_replaced(tmp_path):
    system = SystemSpec(model="Mistral-7B", hardware="A100-80GB-SXM", scheduler="sarathi", token_budget=512)
    cache = TrialCache(tmp_path)
    first, _ = run_trial(system, WORKLOAD, 5.0, cache)
    path = cache.path(trial_key(system, WORKLOAD, 5.0))
    data = bytearray(path.read_bytes())
    for where in (len(data) // 3, len(data) // 2):
        data[where] ^= 0xFF  # flipped bits inside compressed pages: their checksums catch it
    path.write_bytes(bytes(data))
    with pytest.raises(CompactError):
        read_compact(path)
    again, cached = run_trial(system, WORKLOAD, 5.0, cache)
    assert not cached and cache.damaged == 1 and same_requests(again, first)
    assert same_requests(read_compact(path), first)  # replaced
    path.write_bytes(b"")  # truncated to nothing
    assert run_trial(system, WORKLOAD, 5.0, TrialCache(tmp_path))[1] is False


def test_prune_by_age_and_size_and_leftovers(tmp_path):
    now = time.time()
    for n in range(5):
        entry = tmp_path / f"{n:024x}.trial.parquet"
        entry.write_bytes(b"x" * 1000)
        os.utime(entry, (now - n * 86400, now - n * 86400))  # entry n last used n days ago
    stale = tmp_path / f".{'a' * 24}.trial.parquet.123.k2x9q.tmp"  # write_atomically's temporary names
    stale.write_bytes(b"half")
    os.utime(stale, (now - 3600, now - 3600))
    live = tmp_path / f".{'d' * 24}.trial.parquet.456.p0w1z.tmp"
    live.write_bytes(b"being written")
    (tmp_path / "0123456789abcdef01234567").mkdir()  # a trial folder of an older capsim
    assert len(scan(tmp_path).entries) == 5 and len(scan(tmp_path).leftovers) == 2
    gone, kept = prune(tmp_path, parse_age("2.5d"), None)
    assert sorted(p.name[:1] for p in map(lambda i: i.path, kept.entries)) == ["0", "0", "0"]
    assert not stale.exists() and live.exists() and not (tmp_path / "0123456789abcdef01234567").exists()
    gone, kept = prune(tmp_path, None, parse_size("2kB"))
    assert [i.path.name[23] for i in kept.entries] == ["0", "1"]  # the two most recently used


@pytest.mark.parametrize("text", ["10Q", "-5MB", "MB", ""])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ConfigError):
        parse_size(text)


def test_cache_commands(tmp_path):
    cache = tmp_path / "cache"
    run_trial(
        SystemSpec(model="Mistral-7B", hardware="A100-80GB-SXM", scheduler="sarathi", token_budget=512),
        WORKLOAD,
        5.0,
        TrialCache(cache),
    )
    info = subprocess.run(
        [CAPSIM, "cache", "info", "--cache-dir", cache], capture_output=True, text=True, check=True
    ).stdout
    assert str(cache) in info and "trials: 1," in info and "a trial" in info
    pruned = subprocess.run(
        [CAPSIM, "cache", "prune", "--cache-dir", cache, "--max-size", "0"], capture_output=True, text=True, check=True
    ).stdout
    assert "removed 1" in pruned and not list(cache.glob("*.trial.parquet"))
    bad = subprocess.run(
        [CAPSIM, "cache", "prune", "--cache-dir", cache, "--older-than", "soon"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "30d" in bad.stderr and "Traceback" not in bad.stderr


def test_capsim_never_removes_or_uses_a_folder_of_files_it_did_not_write(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("x")
    (home / "thesis.tex").write_text("x")
    old = time.time() - 86400
    for path in home.iterdir():
        os.utime(path, (old, old))
    for args in (
        ["cache", "prune", "--cache-dir", home, "--max-size", "0"],
        [
            "search",
            "--model",
            "Mistral-7B",
            "--scheduler",
            "sarathi",
            "--chunk-size",
            "512",
            "--trace",
            "chat",
            "-n",
            "64",
            "--tbt-slo-value",
            "0.1",
            "--cache-dir",
            home,
            "-o",
            tmp_path / "out",
        ],
    ):
        refused = subprocess.run([CAPSIM, *map(str, args)], capture_output=True, text=True)
        assert (
            refused.returncode == 2 and "capsim did not write" in refused.stderr and "Traceback" not in refused.stderr
        )
    assert sorted(p.name for p in home.iterdir()) == [".bashrc", ".ssh", "thesis.tex"]
    cache = tmp_path / "cache"
    TrialCache(cache)  # a new folder is capsim's: tagged
    (cache / "notes.md").write_text("mine")  # a file put into capsim's own folder stays untouched
    os.utime(cache / "notes.md", (old, old))
    assert prune(cache, 0.0, 0)[0] == [] and (cache / "notes.md").read_text() == "mine"


def test_an_entry_holds_its_key_and_a_swapped_one_is_simulated_again(tmp_path):
    system = SystemSpec(model="Mistral-7B", hardware="A100-80GB-SXM", scheduler="sarathi", token_budget=512)
    cache = TrialCache(tmp_path)
    low, _ = run_trial(system, WORKLOAD, 2.0, cache)
    high, _ = run_trial(system, WORKLOAD, 8.0, cache)
    a, b = cache.path(trial_key(system, WORKLOAD, 2.0)), cache.path(trial_key(system, WORKLOAD, 8.0))
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    again, cached = run_trial(system, WORKLOAD, 2.0, cache)
    assert not cached and cache.damaged == 1 and same_requests(again, low)
    assert run_trial(system, WORKLOAD, 2.0, cache)[1]  # replaced by the right one


def test_a_batch_limit_that_never_bound_shares_its_trial(tmp_path):
    """The same system with another batch limit runs the same trial, bit for bit, where fewer
    requests than either limit ever ran at once: the cache serves it. Where the limit bound, no."""
    cache = TrialCache(tmp_path)
    light = SystemSpec(model="Llama-3.1-8B", hardware="H100", scheduler="sarathi", token_budget=512, max_batch_size=256)
    first, cached = run_trial(light, WORKLOAD, 2.0, cache)
    peak = first.info["peak_running"]
    assert not cached and 0 < peak < 64
    other = SystemSpec(**{**light.to_dict(), "max_batch_size": 64})
    shared, cached = run_trial(other, WORKLOAD, 2.0, cache)
    assert cached and "batch limit 256" in shared.info["shared_from"]
    assert shared.info["system"]["max_batch_size"] == 64
    alone = TrialCache(tmp_path / "alone")  # the same trial simulated on its own, read back as the cache keeps it
    run_trial(other, WORKLOAD, 2.0, alone)
    fresh = alone.get(trial_key(other, WORKLOAD, 2.0))
    for column in ("first_token_s", "finish_s"):
        assert np.array_equal(shared.column(column), fresh.column(column))
    assert np.array_equal(shared.tbt(), fresh.tbt())
    tight = SystemSpec(**{**light.to_dict(), "max_batch_size": peak - 1})  # would have bound: simulated anew
    _, cached = run_trial(tight, WORKLOAD, 2.0, cache)
    assert not cached
