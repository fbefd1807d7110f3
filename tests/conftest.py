"""Offline fixtures: the tiny in-memory tokenizer and random 2-layer Llama of ``rt_lightning.testing``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rt_lightning.testing import save_tiny_model, tiny_tokenizer
from tests.support.files import write_jsonl


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> str:
    """A random 2-layer Llama saved with the tokenizer: loads like any HF folder, no download."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


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
