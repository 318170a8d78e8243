"""ModelRunner on CPU with the tiny model in float32: the paged KV cache must not change the math."""

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from capsim.profiles.model_runner import ModelRunner, SequenceWork  # noqa: E402
from capsim.profiles.models import get_model  # noqa: E402
from capsim.profiles.torch_model import build_model  # noqa: E402

TINY = get_model("tiny")
ATOL = 1e-4  # float32 sums in a different order: differences are ~1e-6


@pytest.fixture(scope="module")
def prompt() -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(1)
    return tuple(torch.randint(0, TINY.vocab, (40,), generator=generator).tolist())


def runner(kv_cache_tokens=256, **kw) -> ModelRunner:
    return ModelRunner(TINY, dtype=torch.float32, kv_cache_tokens=kv_cache_tokens, **kw)


def dense_logits(prompt) -> torch.Tensor:
    """Last-position logits without any cache: plain causal attention over the whole prompt."""
    model = build_model(TINY, dtype=torch.float32)
    group = TINY.heads // TINY.kv_heads

    def attention(layer, q, k, v):
        k, v = (x.transpose(0, 1).repeat_interleave(group, dim=0) for x in (k, v))
        return F.scaled_dot_product_attention(q.transpose(0, 1), k, v, is_causal=True).transpose(0, 1).flatten(1)

    with torch.inference_mode():
        return model.logits(model(torch.tensor(prompt), torch.arange(len(prompt)), attention))[-1]


def test_prefill_chunked_prefill_and_decode_agree(prompt):
    whole = runner()
    token = whole.run([SequenceWork(0, 0, prompt)])
    reference = whole.last_logits[0]
    torch.testing.assert_close(reference, dense_logits(prompt), atol=ATOL, rtol=0)

    chunked = runner()
    chunked.run([SequenceWork(0, 0, prompt[:17])])  # 17: the chunk boundary falls inside a block
    assert chunked.run([SequenceWork(0, 17, prompt[17:])]) == token
    torch.testing.assert_close(chunked.last_logits[0], reference, atol=ATOL, rtol=0)

    decoded = runner()
    decoded.run([SequenceWork(0, 0, prompt[:20])])
    for position in range(20, len(prompt)):
        next_token = decoded.run([SequenceWork(0, position, (prompt[position],))])
    assert next_token == token
    torch.testing.assert_close(decoded.last_logits[0], reference, atol=ATOL, rtol=0)


def test_the_logits_depend_on_the_context(prompt):
    """Guards the test above: an early token must move the last logits far beyond its tolerance."""
    changed = ((prompt[0] + 1) % TINY.vocab,) + prompt[1:]
    assert (dense_logits(changed) - dense_logits(prompt)).abs().max() > 100 * ATOL


def test_a_mixed_batch_matches_sequences_run_alone(prompt):
    def prepare(r):  # B and C hold 23 and 9 tokens of context
        r.run([SequenceWork(1, 0, prompt[:23])])
        r.run([SequenceWork(2, 0, prompt[5:14])])

    together = runner()
    prepare(together)
    batch = [SequenceWork(1, 23, (prompt[30],)), SequenceWork(0, 0, prompt[:31]), SequenceWork(2, 9, (prompt[20],))]
    tokens = together.run(batch)
    logits = together.last_logits

    alone = runner()
    prepare(alone)
    for index, work in enumerate(batch):
        assert alone.run([work]) == [tokens[index]]
        torch.testing.assert_close(alone.last_logits[0], logits[index], atol=ATOL, rtol=0)


def test_blocks_are_allocated_and_freed():
    r = runner(kv_cache_tokens=90, block_size=16)
    assert r.num_blocks == r.free_blocks == 6
    r.run([SequenceWork(0, 0, tuple(range(17)))])
    assert r.free_blocks == 4
    r.run([SequenceWork(1, 40, (5,))])  # context never computed here: blocks for all 41 positions
    assert r.free_blocks == 1
    r.run([SequenceWork(0, 17, (5,))])  # position 17 is still in sequence 0's second block
    assert r.free_blocks == 1
    r.free(0)
    assert r.free_blocks == 3
    r.free(1)
    assert r.free_blocks == 6


def test_running_out_of_blocks_leaves_the_cache_as_it_was():
    r = runner(kv_cache_tokens=64, block_size=16)
    r.run([SequenceWork(0, 0, tuple(range(33)))])  # 3 of 4 blocks
    with pytest.raises(ValueError, match="out of blocks.*kv_cache_tokens"):
        r.run([SequenceWork(0, 33, (1,)), SequenceWork(1, 0, tuple(range(20)))])
    assert r.free_blocks == 1
    r.free(0)
    assert r.free_blocks == 4
    r.run([SequenceWork(1, 0, tuple(range(20)))])


def test_bad_work_is_refused_with_a_helpful_message():
    r = runner()
    with pytest.raises(ValueError, match=r"0\.\.1023"):
        r.run([SequenceWork(0, 0, (1, TINY.vocab))])
    with pytest.raises(ValueError, match="max_context of 4096"):
        r.run([SequenceWork(0, TINY.max_context, (1,))])
    assert r.free_blocks == r.num_blocks  # nothing was allocated for refused work


def test_llama_3_8b_builds_on_meta_with_its_parameter_count():
    spec = get_model("Llama-3-8B")
    model = build_model(spec, device="meta")
    count = sum(p.numel() for p in model.parameters())
    assert all(p.is_meta for p in model.parameters())
    assert count == pytest.approx(spec.params, rel=0.01)


def test_decodes_of_very_different_lengths_run_in_groups_and_match_running_alone():
    """Lengths 600, 590 and 12: the short one gets its own attention group (no padding to 600),
    and every sequence still gets exactly the logits it gets alone."""
    from capsim.profiles.model_runner import _length_groups

    assert _length_groups([601, 591, 13]) == [(0, 2), (2, 3)]
    assert _length_groups([500] * 8) == [(0, 8)]
    generator = torch.Generator().manual_seed(2)
    prompts = {
        seq: tuple(torch.randint(0, TINY.vocab, (n,), generator=generator).tolist())
        for seq, n in ((0, 600), (1, 590), (2, 12))
    }

    def prepared():
        r = runner(kv_cache_tokens=2048)
        for seq, ids in prompts.items():
            r.run([SequenceWork(seq, 0, ids)])
        return r

    together = prepared()
    batch = [SequenceWork(seq, len(ids), (7,)) for seq, ids in prompts.items()]
    tokens = together.run(batch)
    logits = together.last_logits
    alone = prepared()
    for index, work in enumerate(batch):
        assert alone.run([work]) == [tokens[index]]
        torch.testing.assert_close(alone.last_logits[0], logits[index], atol=ATOL, rtol=0)
