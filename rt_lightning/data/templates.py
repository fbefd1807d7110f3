"""Templates render a conversation to text *and* the character spans that are trained.

Labels come from these character spans (via the tokenizer's offsets), never from searching for a response marker
in token ids — the bug class behind TRL's old completion-only collator (paper-notes §8.9). The same template object
renders training examples, ``inspect`` output and inference prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rt_lightning.data.modes import Message

Span = tuple[int, int]


@dataclass(frozen=True)
class Rendered:
    text: str
    spans: tuple[Span, ...]
    """Half-open character ranges of ``text`` that are trained."""


class Template:
    """Base class: ``render`` a training conversation, ``prompt`` an instruction for generation."""

    def render(self, messages: Sequence[Message]) -> Rendered:
        raise NotImplementedError

    def prompt(self, instruction: str) -> str:
        """The inference prompt for one instruction (the same for IT and RT models)."""
        raise NotImplementedError


class TextTemplate(Template):
    """A plain-text template given by one format string per role; ``{content}`` and ``{eos}`` are filled in.

    The trained span of an assistant message runs from ``{content}`` to the end of its format string, so the
    end-of-turn text (EOS and newline for Tulu) is learned too — that is how the model learns to stop.
    """

    def __init__(self, eos_token: str, user: str, assistant: str, system: str = "<|system|>\n{content}\n"):
        if assistant.count("{content}") != 1:
            raise ValueError(f"assistant format must contain '{{content}}' exactly once: {assistant!r}")
        self.eos_token = eos_token
        self.formats = {"system": system, "user": user, "assistant": assistant}

    def _fill(self, fmt: str, content: str) -> tuple[str, int]:
        """Return the filled string and where the content starts in it."""
        head, tail = fmt.split("{content}")
        head = head.replace("{eos}", self.eos_token)
        return head + content + tail.replace("{eos}", self.eos_token), len(head)

    def render(self, messages: Sequence[Message]) -> Rendered:
        parts, spans, offset = [], [], 0
        for message in messages:
            if message.role not in self.formats:
                raise ValueError(f"template has no format for role {message.role!r}")
            piece, content_start = self._fill(self.formats[message.role], message.content)
            if message.trainable:
                spans.append((offset + content_start, offset + len(piece)))
            parts.append(piece)
            offset += len(piece)
        return Rendered("".join(parts), tuple(spans))

    def prompt(self, instruction: str) -> str:
        user, _ = self._fill(self.formats["user"], instruction)
        return user + self.formats["assistant"].split("{content}")[0].replace("{eos}", self.eos_token)


TULU_USER = "<|user|>\n{content}\n"
TULU_ASSISTANT = "<|assistant|>\n{content}{eos}\n"


def tulu(eos_token: str) -> TextTemplate:
    """The paper's template: ``<|user|>\\n{instruction}\\n<|assistant|>\\n{response}{EOS}\\n`` (tags are plain text)."""
    return TextTemplate(eos_token, user=TULU_USER, assistant=TULU_ASSISTANT)


class ChatTemplate(Template):
    """The tokenizer's own Jinja chat template. Assistant spans are found by rendering growing prefixes.

    Each assistant span starts where the rendering of the earlier turns plus the generation prompt ends, and ends
    where the rendering including that turn ends — so end-of-turn markers are trained, headers are not.
    """

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; use template 'tulu' or 'custom'")
        self.tokenizer = tokenizer

    def _apply(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)

    def render(self, messages: Sequence[Message]) -> Rendered:
        text = self._apply(messages, add_generation_prompt=False)
        spans = []
        for i, message in enumerate(messages):
            if not message.trainable:
                continue
            before = self._apply(messages[:i], add_generation_prompt=True) if i else self._apply([], True)
            through = self._apply(messages[: i + 1], add_generation_prompt=False)
            if not (text.startswith(through) and through.startswith(before)):
                raise ValueError("chat template renders turns differently depending on what follows; "
                                 "character spans cannot be derived — use template 'tulu' or 'custom'")
            spans.append((len(before), len(through)))
        return Rendered(text, tuple(spans))

    def prompt(self, instruction: str) -> str:
        return self._apply([Message("user", instruction)], add_generation_prompt=True)


TEMPLATES = ("tulu", "chat", "custom")


def build_template(name: str, tokenizer, user_format: str = TULU_USER, assistant_format: str = TULU_ASSISTANT) -> Template:
    if name == "tulu":
        return tulu(tokenizer.eos_token)
    if name == "custom":
        return TextTemplate(tokenizer.eos_token, user=user_format, assistant=assistant_format)
    if name == "chat":
        return ChatTemplate(tokenizer)
    raise ValueError(f"Unknown template {name!r}; choose one of {TEMPLATES}")
