import pytest
import torch

from rt_lightning.generation import GenerationConfig, encode_prompts, generate
from rt_lightning.model.attention import GROUPED_EAGER, PADDING_SAFE_SDPA, generation_attention, generation_kernel

PROMPTS = ["<|user|>\nWhat is the capital of France?\n<|assistant|>\n", "<|user|>\nHi\n<|assistant|>\n",
           "<|user|>\nGive me three tips for sleeping well at night please.\n<|assistant|>\n"]


def _eager_model(tiny_model_dir, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype, attn_implementation="eager")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_eager_is_bit_identical_to_eager_on_a_left_padded_batch(tiny_model_dir, tokenizer, dtype):
    model = _eager_model(tiny_model_dir, dtype)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # the tiny model groups its heads
    rows = encode_prompts(tokenizer, PROMPTS)
    width = max(map(len, rows))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        eager = model(input_ids=input_ids, attention_mask=mask, output_attentions=True)
        with generation_attention(model):
            assert model.config._attn_implementation == GROUPED_EAGER
            grouped = model(input_ids=input_ids, attention_mask=mask, output_attentions=True)
    assert model.config._attn_implementation == "eager"
    assert torch.equal(eager.logits, grouped.logits)
    assert all(torch.equal(a, b) for a, b in zip(eager.attentions, grouped.attentions))


def test_generation_with_an_eager_model_gives_the_eager_tokens(tiny_model_dir, tokenizer, monkeypatch):
    import rt_lightning.model.attention as attention

    model = _eager_model(tiny_model_dir, torch.bfloat16)
    config = GenerationConfig(max_new_tokens=10, batch_size=3)
    grouped = generate(model, tokenizer, PROMPTS, config)
    monkeypatch.setattr(attention, "generation_kernel", lambda config: None)
    assert generate(model, tokenizer, PROMPTS, config) == grouped


def test_generation_picks_a_kernel_only_where_the_swap_is_exact():
    from transformers import LlamaConfig

    def config(implementation, kv_heads=2, model_type=None):
        cfg = LlamaConfig(num_attention_heads=4, num_key_value_heads=kv_heads)
        cfg._attn_implementation = implementation
        if model_type:
            cfg.model_type = model_type
        return cfg

    assert generation_kernel(config("sdpa")) == PADDING_SAFE_SDPA
    assert generation_kernel(config("eager")) == GROUPED_EAGER
    assert generation_kernel(config("eager", kv_heads=4)) is None  # nothing to share: plain eager is as fast
    assert generation_kernel(config("eager", model_type="gpt_oss")) is None  # its eager adds attention sinks
    assert generation_kernel(config("flash_attention_2")) is None
