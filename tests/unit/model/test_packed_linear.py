"""Linear layers run from oneDNN-packed weights during generation: the same bits, and the model left as it was."""

import pytest
import torch

from rt_lightning.generation import GenerationConfig, generate
from rt_lightning.model import packed_linear
from rt_lightning.model.packed_linear import packed_for_inference

pytestmark = pytest.mark.skipif(not packed_linear.packing_available(), reason="this torch build has no oneDNN packing")

PROMPTS = ["<|user|>\nWhat is the capital of France?\n<|assistant|>\n", "<|user|>\nHi\n<|assistant|>\n",
           "<|user|>\nGive me three tips for sleeping well at night please.\n<|assistant|>\n"]


@pytest.fixture(autouse=True)
def narrow_layers_count(monkeypatch):
    # The tiny model's layers are 64-128 wide; the real threshold would leave them all plain.
    monkeypatch.setattr(packed_linear, "MIN_PACKED_WIDTH", 16)


def bf16_lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    config = LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"], init_lora_weights=False)
    return get_peft_model(model, config).eval()


def plain_forwards(model):
    return {name: "forward" in vars(m) for name, m in model.named_modules()}


@torch.inference_mode()
def test_packed_layers_give_the_same_logits_and_the_model_is_restored(tiny_model_dir):
    model = bf16_lora_model(tiny_model_dir)
    ids = torch.randint(3, 300, (3, 9), generator=torch.Generator().manual_seed(0))
    before, forwards = model(input_ids=ids).logits, plain_forwards(model)
    with packed_for_inference(model) as count:
        assert count == 2 * 7 + 1  # every base projection and the head; LoRA's factors stay (rank 8 < 16)
        packed = model(input_ids=ids).logits
        decode = model(input_ids=ids[:, :1]).logits
    assert torch.equal(packed, before)
    assert torch.equal(decode, model(input_ids=ids[:, :1]).logits)
    assert plain_forwards(model) == forwards
    assert not any(hasattr(m, packed_linear._PACKED) for m in model.modules())


def test_generation_gives_the_plain_tokens(tiny_model_dir, tokenizer):
    model = bf16_lora_model(tiny_model_dir)
    config = GenerationConfig(max_new_tokens=12, batch_size=2)
    packed = generate(model, tokenizer, PROMPTS, config)
    plain = generate(model, tokenizer, PROMPTS, GenerationConfig(**{**vars(config), "pack_weights": False}))
    assert [(g.text, g.num_tokens) for g in packed] == [(g.text, g.num_tokens) for g in plain]


def test_a_shape_whose_packed_product_differs_stays_plain(tiny_model_dir, monkeypatch):
    model = bf16_lora_model(tiny_model_dir)
    monkeypatch.setattr(packed_linear, "_gives_plain_bits", lambda weight, packed, bias: weight.shape[0] != 128)
    with packed_for_inference(model) as count:
        plain = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.shape[0] == 128]
        assert plain and not any(hasattr(m, packed_linear._PACKED) for m in plain)  # gate/up: 128 outputs
        assert count == 2 * 5 + 1


def test_float32_layers_and_gradients_keep_the_plain_path(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    fp32 = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with packed_for_inference(fp32) as count:
        assert count == 0
    layer = torch.nn.Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(2, 32, dtype=torch.bfloat16, requires_grad=True)
    with packed_for_inference(layer) as count:
        assert count == 1
        layer(x).float().sum().backward()  # a packed weight has no backward: the layer's own path runs
    assert x.grad is not None and layer.weight.grad is not None


def test_dense_4bit_copies_are_packed_and_their_forward_comes_back(tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from rt_lightning.hub import load_causal_lm
    from rt_lightning.model.dense4bit import _dense_forward, dequantized_for_inference

    model = load_causal_lm(tiny_model_dir, quantize="nf4", device_map={"": "cpu"}, dtype=torch.bfloat16)
    ids = torch.randint(3, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), dequantized_for_inference(model):
        dense = model(input_ids=ids).logits
        with packed_for_inference(model) as count:
            assert count == 2 * 7 + 1
            assert torch.equal(model(input_ids=ids).logits, dense)
        four_bit = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
        assert four_bit and all(m.forward.__func__ is _dense_forward for m in four_bit)


def test_packed_copies_stay_within_half_the_available_memory(tiny_model_dir, monkeypatch, caplog):
    model = bf16_lora_model(tiny_model_dir)
    head = model.get_output_embeddings().weight
    # The budget (half the available memory) is half the head's bytes: some layers fit, the others stay plain.
    monkeypatch.setattr(packed_linear, "_available_memory", lambda: head.numel() * head.element_size())
    budget = packed_linear.PackingBudget()
    with caplog.at_level("INFO", logger=packed_linear.__name__), packed_for_inference(model, budget=budget) as count:
        packed = [m for m in model.modules() if hasattr(m, packed_linear._PACKED)]
        assert count == len(packed) and 0 < count < 15
        assert sum(_weight_bytes(m) for m in packed) <= head.numel() * head.element_size() // 2
    assert f"{15 - count} linear layers run unpacked" in caplog.text


def _weight_bytes(module):
    return module.weight.numel() * module.weight.element_size()
