"""A tiny offline tokenizer and random Llama for smoke tests, notebooks and debugging a new data module.

Nothing here downloads: the byte-level BPE is trained in memory on a few sentences (well under a second) and the
2-layer Llama gets random weights. Use it to check a pipeline end to end before spending GPU time.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "<|user|>\nWhat is the capital of France?\n<|assistant|>\nThe capital of France is Paris.\n",
    "<|assistant|>\nHere are three tips: sleep well, eat well, and move every day.\n",
    "I'm sorry, but as an AI I cannot help with that request because it could cause harm.",
    "def add(a, b):\n    return a + b\n\n```python\nprint(add(1, 2))\n```",
    "Response tuning trains only on responses; instruction tuning also sees the instruction.",
] * 20


def tiny_tokenizer(vocab_size: int = 400):
    """A byte-level BPE (any text round-trips) that adds ``<s>`` first, as Llama and Gemma tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CORPUS, trainer)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                        special_tokens=[("<s>", core.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def save_tiny_model(folder: str | Path, tokenizer=None, seed: int = 0) -> str:
    """Write a random 2-layer Llama and its tokenizer to ``folder``; it loads like any HF model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
