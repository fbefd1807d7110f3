import torch
from transformers import DynamicCache

from rt_lightning.generation import encode_prompts
from rt_lightning.model.prefill import _joinable, length_groups, prefill


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


def test_grouped_prefill_gives_the_padded_prefills_logits_and_cache(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = ["Give me three tips for sleeping well at night, and explain each one in some detail please.",
               "Hi", "What is the capital of France?", "Name a colour.", "Ok"]
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
        grouped, cache = prefill(forward, model.config, input_ids, attention, positions, lengths)
    assert len(calls) > 1 and sum(rows for rows, _ in calls) == len(prompts)
    assert sum(rows * width for rows, width in calls) < input_ids.numel()
    torch.testing.assert_close(grouped, padded, rtol=1e-5, atol=1e-5)
    assert cache.get_seq_length() == padded_cache.get_seq_length() == input_ids.shape[1]
    visible = attention.bool()[:, None, :, None]  # only real positions matter: padding is masked in decoding
    for ours, theirs in zip(cache.layers, padded_cache.layers):
        torch.testing.assert_close(ours.keys * visible, theirs.keys * visible, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.values * visible, theirs.values * visible, rtol=1e-5, atol=1e-5)


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
    assert not _joinable(DynamicCache(config=gemma), width=10)  # the sliding layer would crop a 10-token prompt
    assert _joinable(DynamicCache(config=gemma), width=3)
