"""q/k/v and gate/up computed as one product each during generation: PEFT's bits, or PEFT's own path."""

import pytest
import torch

from rt_lightning.model import fused_siblings, packed_linear
from rt_lightning.model.fused_siblings import fuse_siblings, unfuse_siblings
from tests.unit.model.test_packed_linear import bf16_lora_model

pytestmark = pytest.mark.skipif(not packed_linear.packing_available(), reason="this torch build has no oneDNN packing")


@pytest.fixture(autouse=True)
def narrow_layers_count(monkeypatch):
    # The tiny model's layers are 32-128 wide; the real threshold would leave them all alone.
    monkeypatch.setattr(fused_siblings, "MIN_PACKED_WIDTH", 16)
    monkeypatch.setattr(packed_linear, "MIN_PACKED_WIDTH", 16)


@pytest.fixture
def model(tiny_model_dir):
    return bf16_lora_model(tiny_model_dir)


def attention_of(model):
    return model.base_model.model.model.layers[0].self_attn


@torch.inference_mode()
def test_each_member_gets_its_own_forwards_bits_and_the_model_is_restored(model):
    ids = torch.randint(3, 300, (3, 9), generator=torch.Generator().manual_seed(0))
    plain = model(input_ids=ids).logits
    fused = fuse_siblings(model)
    try:
        assert len(fused) == 2 * 5  # per layer: q, k, v and gate, up
        assert torch.equal(model(input_ids=ids).logits, plain)
        attn = attention_of(model)
        x = torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
        expected = [own(x) for own in (getattr(attn, n)._rt_fused_sibling[2] for n in ("q_proj", "k_proj", "v_proj"))]
        got = (attn.q_proj(x), attn.k_proj(x), attn.v_proj(x))
        assert all(torch.equal(mine, theirs) for mine, theirs in zip(got, expected))
        # A follower called with another input than its leader's computes for that input.
        other = x.flip(0)
        assert torch.equal(attn.k_proj(other), attn.k_proj._rt_fused_sibling[2](other))
    finally:
        unfuse_siblings(model)
    assert not any("forward" in vars(m) for m in model.modules())
    assert torch.equal(model(input_ids=ids).logits, plain)


def test_adapters_switched_off_or_gradients_take_the_members_own_path(model):
    ids = torch.randint(3, 300, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), model.disable_adapter():
        base_only = model(input_ids=ids).logits
    fuse_siblings(model)
    try:
        with torch.inference_mode(), model.disable_adapter():
            assert torch.equal(model(input_ids=ids).logits, base_only)
        model.train()  # dropout active: PEFT's path draws its masks
        x = torch.randn(2, 3, 64, dtype=torch.bfloat16, requires_grad=True)
        attention_of(model).q_proj(x).float().sum().backward()
        assert x.grad is not None
    finally:
        unfuse_siblings(model)


def test_a_group_whose_fused_outputs_differ_is_left_alone(model, monkeypatch):
    monkeypatch.setattr(fused_siblings, "_gives_member_bits", lambda group: False)
    assert fuse_siblings(model) == []
    assert not any(hasattr(m, fused_siblings._FUSED) for m in model.modules())


def test_the_leader_lets_go_of_the_input_once_every_member_took_its_output(model):
    fuse_siblings(model)
    try:
        attn = attention_of(model)
        group = attn.q_proj._rt_fused_sibling[0]
        with torch.inference_mode():
            x = torch.randn(1, 2, 64).to(torch.bfloat16)
            attn.q_proj(x), attn.k_proj(x)
            assert group.input is x
            attn.v_proj(x)
            assert group.input is None
    finally:
        unfuse_siblings(model)




def test_generation_with_fused_siblings_gives_the_plain_tokens(model, tokenizer, monkeypatch):
    from rt_lightning.generation import GenerationConfig, generate
    from tests.unit.model.test_packed_linear import PROMPTS

    fused_counts = []
    original = fused_siblings.fuse_siblings

    def counting(m, budget):
        fused = original(m, budget)
        fused_counts.append(len(fused))
        return fused

    monkeypatch.setattr(fused_siblings, "fuse_siblings", counting)
    config = GenerationConfig(max_new_tokens=12, batch_size=2)
    fused = generate(model, tokenizer, PROMPTS, config)
    assert fused_counts == [2 * 5]
    plain = generate(model, tokenizer, PROMPTS, GenerationConfig(**{**vars(config), "pack_weights": False}))
    assert [(g.text, g.num_tokens) for g in fused] == [(g.text, g.num_tokens) for g in plain]
