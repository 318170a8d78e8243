"""Speculative decoding: seeded acceptance draws, verify-step pricing, tokens in bursts."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from capsim.capsearch.cli.main import main
from capsim.capsearch.load.metrics import request_latencies
from capsim.sim import SimulationError, SystemSpec, simulate
from capsim.sim.spec_decode import SpecDecoding, SpeculativeSteps
from capsim.traces.workload import Workload


def test_bursts_emit_every_token_and_follow_the_acceptance():
    spec = SpecDecoding("mtp", 3, (0.7,), 0.03)
    outputs = np.random.default_rng(0).integers(1, 400, 3000)
    bursts = spec.bursts(outputs, seed=0)
    assert [int(b.sum()) for b in bursts] == list(outputs - 1)
    flat = np.concatenate(bursts)
    assert flat.min() >= 1 and flat.max() <= 4
    whole = np.concatenate([b[:-1] for b in bursts if len(b) > 1])  # the last step of each is cut short
    assert whole.mean() == pytest.approx(spec.tokens_per_step, rel=0.02)
    assert spec.tokens_per_step == pytest.approx(1 + 0.7 + 0.49 + 0.343)
    again = spec.bursts(outputs, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(bursts, again))


def test_per_position_acceptance():
    spec = SpecDecoding("mtp", 2, (0.8, 0.5), 0.0)
    assert spec.step_token_probabilities() == pytest.approx([0.2, 0.4, 0.4])


def test_a_step_costs_the_verify_batch_and_the_drafts():
    calls = []

    def seconds(*features):
        calls.append(features)
        return 0.01

    steps = SpeculativeSteps(seconds, SpecDecoding("mtp", 3, (0.7,), 0.1))
    assert steps(40, 1, 0, 0, 8, 8000) == pytest.approx(0.01 + 3 * 0.1 * 0.01)
    assert calls[0][0] == 40 + 3 * 8 and calls[1] == (8, 0, 0, 0, 8, 8000)


def _workload(n=200, qps=6.0):
    rng = np.random.default_rng(3)
    return Workload.from_arrays(
        rng.integers(100, 800, n), rng.integers(20, 300, n), np.cumsum(rng.exponential(1 / qps, n))
    )


def test_speculating_cuts_tpot_by_the_acceptance_and_keeps_every_token():
    base = dict(model="Llama-3.1-8B", hardware="H100-SXM", scheduler="vllm_v1")
    workload = _workload()
    plain = simulate(SystemSpec(**base), workload)
    tpot = {}
    for rate in (0.3, 0.6, 0.9):
        result = simulate(SystemSpec(**base, spec_tokens=3, acceptance=(rate,)), workload)
        assert np.array_equal(result.column("output_tokens"), workload.output_tokens)
        assert np.array_equal(np.diff(result.token_times[1]), workload.output_tokens)  # a time for every token
        tpot[rate] = np.nanmean(result.tpot())
        again = simulate(SystemSpec(**base, spec_tokens=3, acceptance=(rate,)), workload)
        assert np.array_equal(result.tpot(), again.tpot(), equal_nan=True)
    assert tpot[0.9] < tpot[0.6] < tpot[0.3] < np.nanmean(plain.tpot())
    latencies = request_latencies(result)
    assert (latencies["itl"] > 0).all()  # a burst reaches vLLM's client as one chunk


def test_speculation_refuses_what_it_cannot_model():
    for overrides, words in (
        (dict(spec_tokens=2), "acceptance rate"),
        (dict(acceptance=(0.5,)), "needs speculative decoding"),
        (dict(spec_tokens=2, acceptance=(0.0,)), r"\(0, 1\]"),
        (dict(spec_tokens=2, acceptance=(0.5,), spec_method="draft"), "--draft-cost"),
        (dict(spec_tokens=2, acceptance=(0.5,), engine="reference"), "reference"),
        (dict(spec_tokens=2, acceptance=(0.5,), spec_method="eagle"), "unknown speculative method"),
    ):
        with pytest.raises(SimulationError, match=words):
            SystemSpec(model="Llama-3.1-8B", **overrides)


def test_cli_speculation_flags(tmp_path):
    ok = CliRunner().invoke(
        main,
        ["simulate", "--model", "Llama-3.1-8B", "--qps", "2", "-n", "32", "--spec-tokens", "2"]
        + ["--acceptance-rate", "0.8,0.6", "-o", str(tmp_path / "out")],
    )
    assert ok.exit_code == 0, ok.output
    assert "MTP 2 drafts at acceptance 0.8/0.6 (2.28 tokens a step" in ok.output
    bad = CliRunner().invoke(
        main, ["simulate", "--model", "Llama-3.1-8B", "--spec-tokens", "2", "--acceptance-rate", "2"]
    )
    assert bad.exit_code == 2 and "(0, 1]" in bad.output and "Traceback" not in bad.output
