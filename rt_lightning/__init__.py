"""rt_lightning: Response Tuning (and instruction tuning) of pre-trained LLMs with Lightning, QLoRA and PEFT."""

__version__ = "0.1.0"
