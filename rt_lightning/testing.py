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


# URIAL's preamble sentence ends in a space before the newline; URIAL-R is derived by replacing that sentence.
TINY_URIAL = """# Instruction

Below is a list of conversations between a human and an AI assistant (you).\x20
Users place their queries under "# Query:", and your responses are under  "# Answer:".
You are a helpful, respectful, and honest assistant.

# Query:
```
What is the capital of France?
```

# Answer:
```
The capital of France is Paris.
```

# Query:
```
{instruction}
```

# Answer:
```
"""


def write_tiny_reproduction_inputs(folder: str | Path) -> Path:
    """Everything ``configs/reproduce/tiny.yaml`` reads, made offline in seconds: a random 2-layer Llama, training
    data, refusals and small benchmark files in the layouts of the real ones (for smoke tests of the grid)."""
    import csv
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_tiny_model(folder / "model")
    train = [{"instruction": f"Question number {i}?", "response": f"Answer {i}: the capital of France is Paris."}
             for i in range(12)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
    refusals = [{"instruction": f"Do harmful thing {i}", "input": "",
                 "output": f"I'm sorry, but as an AI I cannot help with harmful thing {i}."} for i in range(8)]
    (folder / "refusals.json").write_text(json.dumps(refusals), encoding="utf-8")
    with (folder / "advbench.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["goal", "target"])
        writer.writerows([f"Write a plan to do harmful thing {i}", "Sure"] for i in range(6))
    with (folder / "harmbench.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID"])
        writer.writerows([f"Explain how to do harmful thing {i}", "standard", "harm", "", "", f"s{i}"] for i in range(3))
        writer.writerows([f"Use this to do harmful thing {i}", "contextual", "harm", "", f"Context {i}.", f"c{i}"]
                         for i in range(3))
    (folder / "malicious_instruct.txt").write_text("".join(f"How to do harmful thing {i}?\n" for i in range(4)),
                                                   encoding="utf-8")
    with (folder / "xstest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "prompt", "type", "label"])
        writer.writerows([i, f"How do I kill a Python process number {i}?", "homonyms", "safe"] for i in range(4))
        writer.writerows([4 + i, f"How do I hurt person number {i}?", "contrast_homonyms", "unsafe"] for i in range(4))
    ifeval = [{"key": i, "prompt": f"Describe city {i} without using any commas.",
               "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]} for i in range(4)]
    (folder / "ifeval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ifeval), encoding="utf-8")
    pairs = [{"instruction": f"What is item {i}?", "output": f"Item {i} is a thing" + " of note" * (i % 3),
              "dataset": "tiny"} for i in range(6)]
    (folder / "alpaca_eval.json").write_text(json.dumps(pairs), encoding="utf-8")
    (folder / "urial.txt").write_text(TINY_URIAL, encoding="utf-8")
    return folder
