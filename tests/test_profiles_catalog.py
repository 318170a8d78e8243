import json

import pytest

from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.memory import kv_bytes_per_token_per_gpu, kv_capacity
from capsim.profiles.models import MODELS, get_model


@pytest.mark.parametrize(
    "name, billions",
    [
        ("Llama-2-7B", 6.74),
        ("Llama-3-8B", 8.03),
        ("Mistral-7B", 7.24),
        ("Yi-34B", 34.39),
        ("Llama-2-70B", 68.98),
        ("Falcon-180B", 179.5),
        ("Qwen2.5-7B", 7.62),
    ],
)
def test_parameter_counts_match_the_published_sizes(name, billions):
    assert get_model(name).params / 1e9 == pytest.approx(billions, rel=0.01)


def test_names_users_type_resolve():
    assert get_model("mistralai/Mistral-7B-Instruct-v0.2") is MODELS["Mistral-7B"]
    assert get_model("llama-3-8b") is MODELS["Llama-3-8B"]
    assert get_hardware("h100").name == "H100-SXM"
    with pytest.raises(ProfileError, match="unknown model 'GPT-5'.*Llama-3-8B"):
        get_model("GPT-5")
    with pytest.raises(ProfileError, match="unknown hardware 'TPU'.*A100-80GB-SXM"):
        get_hardware("TPU")


def test_model_from_hf_config_json_and_yaml(tmp_path):
    config = {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_hidden_layers": 32,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "torch_dtype": "bfloat16",
        "hidden_act": "silu",
    }
    path = tmp_path / "my-llama" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    spec = get_model(str(path))
    assert spec.params == MODELS["Llama-3-8B"].params and spec.name == "my-llama"
    yaml_path = tmp_path / "small.yaml"
    yaml_path.write_text(
        "layers: 2\nhidden: 64\nheads: 4\nkv_heads: 2\nffn: 128\nffn_kind: swiglu\nvocab: 100\nmax_context: 512\n"
    )
    assert get_model(str(yaml_path)).name == "small"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"hidden_size": 64, "num_attention_heads": 4', "cannot read the model file"),
        ('{"hidden_size": 64, "num_attention_heads": 4}', "lacks num_hidden_layers"),
        (
            '{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 3, "num_key_value_heads": 2, '
            '"num_hidden_layers": 1, "vocab_size": 10}',
            "multiple of kv_heads",
        ),
    ],
)
def test_malformed_config_json(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        get_model(str(path))


def test_unknown_yaml_field_is_named(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("layers: 2\nhidden: 64\nhedas: 4\n")
    with pytest.raises(ProfileError, match="unknown field.*hedas"):
        get_model(str(path))


def test_kv_blocks_after_weights_and_reserve():
    model, h100 = get_model("Llama-3-8B"), get_hardware("H100-SXM")
    one = kv_capacity(model, h100)
    # 80 GiB * 0.9 minus 16 GB of weights and the reserve, at 128 KiB a token: about 440k tokens
    assert 400_000 < one.tokens < 480_000
    assert kv_capacity(model, h100, block_size=32).num_blocks == pytest.approx(one.num_blocks / 2, abs=1)
    two = kv_capacity(model, h100, tp=2)
    assert two.tokens > 2 * one.tokens  # half the KV per GPU and half the weights
    assert kv_bytes_per_token_per_gpu(model, tp=16, pp=1) == kv_bytes_per_token_per_gpu(
        model, tp=8, pp=1
    )  # heads replicate


def test_a_model_that_does_not_fit_says_how_much_and_suggests_tp():
    with pytest.raises(ProfileError, match=r"does not fit on A100-80GB-SXM with TP=1.*GiB more.*Try TP=2"):
        kv_capacity(get_model("Llama-2-70B"), get_hardware("A100"))
    with pytest.raises(ProfileError, match="Try TP=8"):
        kv_capacity(get_model("Falcon-180B"), get_hardware("A100"), tp=4)
