import pytest
import torch
from transformers import DynamicCache

from rt_lightning import generation
from rt_lightning.generation import GenerationConfig, encode_prompts, generate
from rt_lightning.model import prefill as prefill_module
from rt_lightning.model.prefill import _joinable, length_groups, prefill, shared_prefix_length


def test_length_groups_split_where_rows_get_much_shorter_or_a_group_is_full():
    assert length_groups([100, 90, 80, 60, 50, 10]) == [(0, 3), (3, 5), (5, 6)]
    assert length_groups([5] * 40) == [(0, 16), (16, 32), (32, 40)]
    assert length_groups([7]) == [(0, 1)]


def _batch(tokenizer, prompts):
    rows = sorted(encode_prompts(tokenizer, prompts), key=len, reverse=True)
    width = len(rows[0])
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return input_ids, attention, (attention.cumsum(-1) - 1).clamp(min=0), [len(r) for r in rows]


def prefill_and_padded(model, tokenizer, prompts):
    """``prefill`` and one padded forward on the same batch: the shapes ``prefill`` ran, its logits and cache, and
    the padded forward's, with the batch's attention mask."""
    input_ids, attention, positions, lengths = _batch(tokenizer, prompts)
    calls = []

    def forward(ids, mask, pos, cache):
        calls.append(ids.shape)
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                     logits_to_keep=1).logits[:, -1, :]

    with torch.no_grad():
        padded_cache = DynamicCache(config=model.config)
        padded = forward(input_ids, attention, positions, padded_cache)
        calls.clear()
        joined, cache = prefill(forward, model.config, input_ids, attention, positions, lengths)
    return calls, (joined, cache), (padded, padded_cache), attention


def assert_same_real_positions(joined, padded, attention):
    """Same logits; the same keys and values wherever a row has a real position (padding is masked in decoding)."""
    (logits, cache), (padded_logits, padded_cache) = joined, padded
    torch.testing.assert_close(logits, padded_logits, rtol=1e-5, atol=1e-5)
    assert cache.get_seq_length() == padded_cache.get_seq_length() == attention.shape[1]
    for ours, theirs in zip(cache.layers, padded_cache.layers):
        assert ours.keys.shape == theirs.keys.shape
        visible = attention.bool()[:, -ours.keys.shape[-2]:][:, None, :, None]  # a sliding layer's last positions
        torch.testing.assert_close(ours.keys * visible, theirs.keys * visible, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.values * visible, theirs.values * visible, rtol=1e-5, atol=1e-5)


def test_grouped_prefill_gives_the_padded_prefills_logits_and_cache(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = ["Give me three tips for sleeping well at night, and explain each one in some detail please.",
               "Hi", "What is the capital of France?", "Name a colour.", "Ok"]
    calls, joined, padded, attention = prefill_and_padded(model, tokenizer, prompts)
    assert len(calls) > 1 and sum(rows for rows, _ in calls) == len(prompts)
    assert sum(rows * width for rows, width in calls) < attention.numel()
    assert_same_real_positions(joined, padded, attention)


def test_a_batch_with_little_padding_or_a_cropping_cache_is_prefilled_in_one_forward(tiny_model_dir, tokenizer):
    from transformers import Gemma3TextConfig

    calls = []

    def forward(ids, mask, pos, cache):
        calls.append(ids.shape)
        return torch.zeros(ids.shape[0], 4)

    input_ids, attention, positions, lengths = _batch(tokenizer, ["What is the capital of France?"] * 3)
    prefill(forward, None, input_ids, attention, positions, lengths)
    assert calls == [input_ids.shape]

    gemma = Gemma3TextConfig(num_hidden_layers=2, sliding_window=4, layer_types=["sliding_attention", "full_attention"])
    assert _joinable(DynamicCache(config=gemma))  # sliding layers join at any width: each row's window, right-aligned


def test_shared_prefix_length_leaves_every_row_a_token_of_its_own():
    rows = [torch.tensor(r) for r in ([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 9], [1, 2, 3, 4])]
    assert shared_prefix_length(rows) == 3  # the shortest row keeps its last token
    assert shared_prefix_length([torch.tensor([1, 2, 3]), torch.tensor([7, 2, 3])]) == 0


@pytest.fixture(scope="module")
def gemma(tokenizer):
    """A random 2-layer Gemma-3 with a sliding window far shorter than the test prompts."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=6,
                              layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, attn_implementation="eager")
    return Gemma3ForCausalLM(config).eval()


EXAMPLES = "Here are some examples of good answers. Question: what is two plus two? Answer: four. "


@pytest.mark.parametrize("shared", [True, False], ids=["shared-prefix", "length-groups"])
def test_prefill_past_the_sliding_window_gives_the_padded_logits_and_cache(gemma, tokenizer, shared, monkeypatch):
    monkeypatch.setattr(prefill_module, "MIN_SHARED_PREFIX", 8 if shared else 10_000)
    head = EXAMPLES if shared else ""
    prompts = [head + "Give me three tips for sleeping well at night, and explain each one please.",
               head + "Hi", head + "Name a colour.", head + "Ok", head + "Why?"]
    calls, joined, padded, attention = prefill_and_padded(gemma, tokenizer, prompts)
    assert attention.shape[1] > gemma.config.sliding_window
    assert len(calls) > 1 and sum(rows * width for rows, width in calls) < attention.numel()
    if shared:
        assert calls[0][0] == 1  # the prefix, once
    assert_same_real_positions(joined, padded, attention)


def test_generation_from_a_shared_prefix_gives_the_padded_prefills_tokens(gemma, tokenizer, monkeypatch):
    monkeypatch.setattr(prefill_module, "MIN_SHARED_PREFIX", 8)
    prompts = [EXAMPLES + q for q in ("Hi", "What is the capital of France?", "Name a colour.", "Ok")]
    config = GenerationConfig(max_new_tokens=10, batch_size=4)
    shared = generate(gemma, tokenizer, prompts, config)
    monkeypatch.setattr(generation, "prefill", lambda forward, cfg, ids, mask, pos, lengths: _padded(forward, cfg, ids,
                                                                                                     mask, pos))
    assert [g.text for g in generate(gemma, tokenizer, prompts, config)] == [g.text for g in shared]


def _padded(forward, config, ids, mask, pos):
    cache = DynamicCache(config=config)
    return forward(ids, mask, pos, cache), cache
