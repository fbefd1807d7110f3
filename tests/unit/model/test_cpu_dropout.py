import pytest
import torch

from rt_lightning.model.cpu_dropout import BulkDropout, use_bulk_dropout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bulk_dropout_keeps_one_minus_p_and_scales_as_torch_does(dtype):
    x = torch.ones(64, 1024, dtype=dtype)
    out = BulkDropout(0.1).train()(x)
    reference = torch.nn.functional.dropout(x, 0.1, training=True)
    assert set(out.unique().tolist()) == set(reference.unique().tolist())  # 0 and 1/0.9 rounded to the dtype
    assert out.dtype == dtype
    assert abs((out == 0).float().mean().item() - 0.1) < 0.005  # 65,536 draws: 6 standard deviations is 0.007


def test_bulk_dropout_follows_torch_seed_and_is_identity_in_eval():
    dropout = BulkDropout(0.3).train()
    x = torch.randn(8, 300)
    torch.manual_seed(5)
    first = dropout(x)
    torch.manual_seed(5)
    assert torch.equal(dropout(x), first)
    torch.manual_seed(6)
    assert not torch.equal(dropout(x), first)
    assert dropout.eval()(x) is x


def test_bulk_dropout_gradient_is_the_mask():
    x = torch.randn(4, 50, requires_grad=True)
    torch.manual_seed(0)
    out = BulkDropout(0.5).train()(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out / x).detach())


def test_lora_layers_get_bulk_dropout(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear"))
    adapted = sum(1 for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict))
    assert use_bulk_dropout(model) == adapted > 0
    assert use_bulk_dropout(model) == 0  # already replaced
    assert all(type(d) is BulkDropout for m in model.modules()
               if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict) for d in m.lora_dropout.values())
