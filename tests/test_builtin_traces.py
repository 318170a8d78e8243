import numpy as np
import pytest

from capsim.traces import builtin_traces, get_builtin, load_trace

SOURCES = {
    "chat": "sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
    "arxiv4k": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
    "bwb": "bwb_stats_llama2_tokenizer_filtered_v2.csv",
    "azure-code": "splitwise_code.csv",
    "azure-conv": "splitwise_conv.csv",
}


@pytest.mark.parametrize("name", SOURCES)
def test_large_builtin_sample_matches_the_real_file(reference_traces, name):
    real = load_trace(reference_traces / SOURCES[name])
    sample = get_builtin(name).sample(100_000, seed=11)
    for column in ("prompt_tokens", "output_tokens"):
        got = np.percentile(getattr(sample, column), [10, 50, 90, 99])
        want = np.percentile(getattr(real, column), [10, 50, 90, 99])
        assert got == pytest.approx(want, rel=0.05), column
    # the joint shape: total length and the prompt/output rank correlation
    total = lambda w: w.prompt_tokens + w.output_tokens  # noqa: E731
    assert np.percentile(total(sample), [50, 90]) == pytest.approx(np.percentile(total(real), [50, 90]), rel=0.03)
    rank = lambda w: np.corrcoef(np.argsort(np.argsort(w.prompt_tokens)), np.argsort(np.argsort(w.output_tokens)))[0, 1]  # noqa: E731
    assert rank(sample) == pytest.approx(rank(real), abs=0.05)


def test_arxiv16k_matches_the_published_statistics():
    sample = get_builtin("arxiv").sample(100_000, seed=0)
    assert np.percentile(sample.prompt_tokens, [50, 90]) == pytest.approx([7059, 12985], rel=0.03)
    assert np.percentile(sample.output_tokens, [50, 90]) == pytest.approx([208, 371], rel=0.03)
    assert (sample.prompt_tokens + sample.output_tokens).max() <= 16384


@pytest.mark.parametrize("name", list(builtin_traces()))
def test_builtin_sampling_is_reproducible_and_capped(name):
    trace = get_builtin(name)
    a, b = trace.sample(3000, seed=5), trace.sample(3000, seed=5)
    assert a.table.equals(b.table)
    assert not a.table.equals(trace.sample(3000, seed=6).table)
    assert a.prompt_tokens.min() >= 1 and a.output_tokens.min() >= 1
    if trace.max_total_tokens:
        assert (a.prompt_tokens + a.output_tokens).max() <= trace.max_total_tokens


def test_chat_has_the_published_figures_without_shared():
    sample = get_builtin("chat").sample(50_000, seed=2)
    assert np.percentile(sample.prompt_tokens, [50, 90]) == pytest.approx([1730, 5696], rel=0.03)
    assert np.percentile(sample.output_tokens, [50, 90]) == pytest.approx([415, 834], rel=0.03)
