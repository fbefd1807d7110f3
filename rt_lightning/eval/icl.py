"""The in-context setting (paper §6): an untuned base model prompted with URIAL, URIAL-R or a 0-shot template.

URIAL (Lin et al., 2024) puts a system preamble and three query/answer demonstrations before the query; URIAL-R keeps
only the demonstrations' *answers* and says "a list of responses" — in-context response learning. The URIAL prompt
file is passed by path (e.g. the paper's ``urial1kv4-4shot.txt``); URIAL-R can be given as its own file or derived
from the URIAL file by ``to_response_only``, which reproduces the paper's URIAL-R file exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

ZERO_SHOT = "# Query:\n```\n{instruction}\n```\n\n# Answer:\n```"
"""The 0-shot baseline: the query block and an open answer fence, no preamble, no demonstrations."""
STOP_STRINGS = ["# Query:", "# Answer:", "# Instruction"]
"""The model writes the next block header when its answer is done; generation stops there."""
KINDS = ("zeroshot", "urial", "urial_r")

_CONVERSATIONS = "Below is a list of conversations between a human and an AI assistant (you). "
_RESPONSES = "Below is a list of responses of AI assistant (you). "
_DEMO_QUERY = re.compile(r"# Query:\n```\n(?:(?!```).)*?\n```\n\n(?=# Answer:)", re.DOTALL)


def to_response_only(urial: str) -> str:
    """URIAL → URIAL-R: change the preamble's first sentence and delete every demonstration's query block."""
    if _CONVERSATIONS not in urial:
        raise ValueError("not a URIAL prompt: its preamble sentence about conversations was not found")
    head, sep, final_query = urial.rpartition("# Query:\n```\n{instruction}")
    if not sep:
        raise ValueError("not a URIAL prompt: no final '# Query:' block holding {instruction}")
    return _DEMO_QUERY.sub("", head.replace(_CONVERSATIONS, _RESPONSES)) + sep + final_query


class IclPrompt:
    """Builds the prompt for one instruction the way the paper's code does: ``text.strip().format(instruction=…)``."""

    def __init__(self, kind: str, path: Optional[str] = None):
        if kind not in KINDS:
            raise ValueError(f"Unknown in-context setting {kind!r}; choose from {KINDS}")
        if kind == "zeroshot":
            text = Path(path).read_text(encoding="utf-8") if path else ZERO_SHOT
        elif path is None:
            raise ValueError(f"icl={kind!r} needs the URIAL prompt file (e.g. urial1kv4-4shot.txt) as icl_prompt")
        else:
            text = Path(path).read_text(encoding="utf-8")
            if kind == "urial_r" and _CONVERSATIONS in text:  # given the URIAL file: derive the response-only one
                text = to_response_only(text)
        self.kind, self.text = kind, text.strip()

    def prompt(self, instruction: str) -> str:
        return self.text.format(instruction=instruction)

    @staticmethod
    def clean(response: str) -> str:
        """Drop what follows the answer fence: the paper cuts at the stop strings and strips trailing backticks."""
        for stop in STOP_STRINGS:
            response = response.split(stop, 1)[0]
        return response.strip().rstrip("`").rstrip()
