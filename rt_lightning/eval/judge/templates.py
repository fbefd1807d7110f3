"""Judge prompt templates: text files with placeholders, rendered into chat messages.

Our own defaults live in ``rt_lightning/assets/judge_prompts/`` and use ``{instruction}``, ``{response}``,
``{response_a}`` and ``{response_b}``. Templates written for other tools can be passed *by path* (they are not shipped
here); they spell their placeholders differently, so ``PLACEHOLDERS`` lists every spelling we accept and which field
it stands for. Nothing else in a template is interpreted: JSON braces and examples pass through untouched, which is
why this is a literal token replacement and not ``str.format`` or ``string.Template``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from rt_lightning.constants import ASSETS_DIR

__all__ = ["PLACEHOLDERS", "DEFAULT_TEMPLATE_DIR", "JudgeTemplate", "load_template"]

DEFAULT_TEMPLATE_DIR = ASSETS_DIR / "judge_prompts"

# Placeholder spelling -> the field it is filled with.
PLACEHOLDERS: dict[str, str] = {
    # ours (defaults in rt_lightning/assets/judge_prompts)
    "{instruction}": "instruction",
    "{response}": "response",
    "{response_a}": "response_a",
    "{response_b}": "response_b",
    # the RT paper's refusal-judge prompt: <BEGIN USER REQUEST>{prompt}... {model_output}
    "{prompt}": "instruction",
    "{model_output}": "response",
    # JustEval's score_multi / score_safety templates
    "${instruction}": "instruction",
    "${candidate}": "response",
    # AlpacaEval's annotator templates ({instruction} as ours); output_1 is shown first
    "{output_1}": "response_a",
    "{output_2}": "response_b",
}
# Longest spelling first, so "${instruction}" is consumed whole rather than as "$" + "{instruction}".
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in sorted(PLACEHOLDERS, key=len, reverse=True)))

# AlpacaEval's files are in ChatML-like markup: one block per chat message.
_CHAT_BLOCK_RE = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)\n?<\|im_end\|>", re.DOTALL)


@dataclass(frozen=True)
class JudgeTemplate:
    path: str
    text: str

    @property
    def sha256(self) -> str:
        """Fingerprint stored with every judgment, so judgments made with another prompt are never mixed in."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def fields(self) -> set[str]:
        return {PLACEHOLDERS[m.group(0)] for m in _PLACEHOLDER_RE.finditer(self.text)}

    def require(self, *fields: str) -> "JudgeTemplate":
        missing = [f for f in fields if f not in self.fields]
        if missing:
            spellings = sorted(p for p, f in PLACEHOLDERS.items() if f in missing)
            raise ValueError(f"judge template {self.path} has no placeholder for {missing}; "
                             f"use one of {spellings}")
        return self

    def render(self, **values: str) -> list[dict[str, str]]:
        """Chat messages with every known placeholder filled in one pass: a filled-in response that itself contains
        "{response}" is left as written, never substituted again."""
        blocks = _CHAT_BLOCK_RE.findall(self.text) if "<|im_start|>" in self.text else [("user", self.text)]
        if not blocks:
            raise ValueError(f"judge template {self.path} has <|im_start|> markup but no complete message block")

        def fill(match: re.Match) -> str:
            field = PLACEHOLDERS[match.group(0)]
            if field not in values:
                raise KeyError(f"judge template {self.path} needs {field!r}, which was not given")
            return str(values[field])

        return [{"role": role, "content": _PLACEHOLDER_RE.sub(fill, content)} for role, content in blocks]


def load_template(path: str | Path | None, default_name: str) -> JudgeTemplate:
    """The template at ``path``, or our default ``<default_name>.txt`` when no path is given."""
    file = Path(path) if path else DEFAULT_TEMPLATE_DIR / f"{default_name}.txt"
    if not file.is_file():
        raise FileNotFoundError(f"judge template not found: {file}")
    return JudgeTemplate(str(file), file.read_text(encoding="utf-8"))
