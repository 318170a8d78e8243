"""A Hugging Face model folder for a catalog model, made here: what an engine loads with random
weights (`--load-format dummy`), so that nothing is downloaded.

It holds the architecture (config.json, Llama or Mixtral, from the catalog's dimensions) and a
tokenizer (tokenizer.json: one word a token id, read by the `tokenizers` library that every
engine uses). capsim sends prompts as token ids, so the tokenizer only turns generated ids back
into text. The files are written once and reused while they match; a folder of the same name
that capsim did not make (no marker file) is never written to.
"""

from __future__ import annotations

import json
from pathlib import Path

from capsim.common.files import write_atomically
from capsim.profiles.errors import ProfileError
from capsim.profiles.models import ModelSpec

MARKER = ".capsim-model-folder"  # a folder capsim made and may rewrite; any other is left alone
TORCH_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


def hf_config(model: ModelSpec) -> dict:
    """The model's config.json: Llama (dense, SwiGLU) or Mixtral (mixture of experts)."""
    if model.ffn_kind != "swiglu":
        raise ProfileError(
            f"{model.name}: capsim writes Llama-style folders (SwiGLU MLPs) only; give the engine the model's own "
            "folder or Hugging Face id"
        )
    if model.dtype not in TORCH_DTYPES:
        raise ProfileError(
            f"{model.name}: a {model.dtype} checkpoint cannot be made up here; give the engine the model's own folder"
        )
    config = {
        "architectures": ["MixtralForCausalLM" if model.is_moe else "LlamaForCausalLM"],
        "model_type": "mixtral" if model.is_moe else "llama",
        "hidden_size": model.hidden,
        "intermediate_size": model.expert_ffn,  # a Mixtral expert's (shared experts and MLA are not kept)
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "num_key_value_heads": model.kv_heads,
        "head_dim": model.head_dim,
        "vocab_size": model.vocab,
        "max_position_embeddings": model.max_context,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": TORCH_DTYPES[model.dtype],
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if model.is_moe:
        config |= {"num_local_experts": model.experts, "num_experts_per_tok": model.active_experts}
    return config


def tokenizer_json(vocab: int) -> dict:
    """A word-level tokenizer: id i is the word `t<i>` (0, 1, 2: unknown, start, end of text)."""
    words = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(3, vocab)}
    special = [
        {
            "id": i,
            "content": word,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for word, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "<unk>"},
    }


def model_folder(model: ModelSpec, parent: Path) -> Path:
    """parent/<model name>: config.json, tokenizer.json and tokenizer_config.json (made if missing or stale)."""
    folder = Path(parent) / model.name.replace("/", "--")
    files = {
        "config.json": hf_config(model),
        "tokenizer.json": tokenizer_json(model.vocab),
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": "<unk>",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "model_max_length": model.max_context,
            "clean_up_tokenization_spaces": False,
        },
    }
    marker = folder / MARKER
    if folder.is_dir() and any(folder.iterdir()) and not marker.is_file():
        raise ProfileError(
            f"{folder} holds files capsim did not write; capsim only writes model folders of its own there: "
            "choose another folder (--model-dir)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by capsim from its catalog; capsim may rewrite the files here\n")
    for name, document in files.items():
        text = json.dumps(document, indent=1, sort_keys=True)
        path = folder / name
        if not path.is_file() or path.read_text() != text:
            write_atomically(path, lambda tmp, text=text: Path(tmp).write_text(text))
    return folder
