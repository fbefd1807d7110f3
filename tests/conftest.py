"""Offline fixtures: a byte-level BPE tokenizer trained in memory and a random 2-layer Llama built from it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CORPUS = [
    "<|user|>\nWhat is the capital of France?\n<|assistant|>\nThe capital of France is Paris.\n",
    "<|assistant|>\nHere are three tips: sleep well, eat well, and move every day.\n",
    "I'm sorry, but as an AI I cannot help with that request because it could cause harm.",
    "def add(a, b):\n    return a + b\n\n```python\nprint(add(1, 2))\n```",
    "Response tuning trains only on responses; instruction tuning also sees the instruction.",
] * 20


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CORPUS, trainer)
    # Add BOS by default, as Llama and Gemma tokenizers do.
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                        special_tokens=[("<s>", core.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> str:
    """A random 2-layer Llama saved with the tokenizer: loads like any HF folder, no download."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def small_jsonl(tmp_path) -> Path:
    rows = [{"instruction": f"Question number {i}?", "response": f"Answer {i}: the capital of France is Paris."}
            for i in range(12)]
    return write_jsonl(tmp_path / "small.jsonl", rows)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep dataset caches per test; the converted Gemma model stays in the shared user cache."""
    monkeypatch.setenv("RT_LIGHTNING_DATASET_CACHE", str(tmp_path / "dataset-cache"))
    logging.getLogger("rt_lightning").setLevel(logging.INFO)


def requires_shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (the shared data folder is optional)")
    return path
