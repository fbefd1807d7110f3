"""Offline fixtures: the tiny in-memory tokenizer and random 2-layer Llama of ``rt_lightning.tiny``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rt_lightning.tiny import save_tiny_model, tiny_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> str:
    """A random 2-layer Llama saved with the tokenizer: loads like any HF folder, no download."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


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
