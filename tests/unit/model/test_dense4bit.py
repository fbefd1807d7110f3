"""Dense copies of frozen 4-bit layers on CPU: the same outputs and gradients as bitsandbytes' per-forward path."""

import pytest
import torch

from rt_lightning.model.dense4bit import cache_dequantized, dequantized_for_inference, drop_dequantized, is_dequantized
from rt_lightning.model.module import ResponseTuningModule

pytest.importorskip("bitsandbytes")


def qlora(tiny_model_dir, **kwargs):
    m = ResponseTuningModule(model=tiny_model_dir, quantize="nf4", dtype="bfloat16", lora_r=8, lora_dropout=0.0,
                             gradient_checkpointing=False, **kwargs)
    m.configure_model()
    return m


def logits_and_grads(m, ids):
    m.zero_grad()
    logits = m.model(input_ids=ids).logits
    logits.float().sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}


def test_dense_copies_give_bit_identical_outputs_and_lora_gradients(tiny_model_dir):
    m = qlora(tiny_model_dir, dense_cpu_base=False)
    assert not is_dequantized(m.model)
    ids = torch.randint(3, 300, (2, 11), generator=torch.Generator().manual_seed(0))
    four_bit, four_bit_grads = logits_and_grads(m, ids)
    assert cache_dequantized(m.model) == 14  # 2 layers x 7 projections
    dense, dense_grads = logits_and_grads(m, ids)
    assert torch.equal(dense, four_bit)
    assert four_bit_grads and all(torch.equal(dense_grads[n], four_bit_grads[n]) for n in four_bit_grads)
    drop_dequantized(m.model)
    assert not is_dequantized(m.model) and torch.equal(logits_and_grads(m, ids)[0], four_bit)


def test_module_caches_by_default_and_the_training_loss_is_unchanged(tiny_model_dir, tokenizer, small_jsonl):
    from tests.unit.model.test_module import batch

    b = batch(tokenizer, small_jsonl)
    torch.manual_seed(0)  # the same LoRA initialisation for both
    dense = qlora(tiny_model_dir)
    torch.manual_seed(0)
    plain = qlora(tiny_model_dir, dense_cpu_base=False)
    assert is_dequantized(dense.model) and not is_dequantized(plain.model)
    losses = [m.loss(b)[0] for m in (dense, plain)]
    assert torch.equal(losses[0], losses[1])


def test_inference_block_leaves_the_model_as_it_found_it(tiny_model_dir):
    m = qlora(tiny_model_dir, dense_cpu_base=False)
    with dequantized_for_inference(m.model) as dense:
        assert dense and is_dequantized(m.model)
    assert not is_dequantized(m.model)
    with dequantized_for_inference(m.model, enabled=False) as dense:
        assert not dense
    cache_dequantized(m.model)
    with dequantized_for_inference(m.model):
        pass
    assert is_dequantized(m.model)  # a model cached by its owner keeps its copies


def test_a_trainable_4bit_weight_is_refused(tiny_model_dir):
    m = qlora(tiny_model_dir, dense_cpu_base=False)
    layer = next(x for x in m.model.modules() if type(x).__name__ == "Linear4bit")
    layer.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="trainable 4-bit weight"):
        cache_dequantized(m.model)
