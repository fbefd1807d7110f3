"""Templates render a conversation to text *and* the character spans that are trained.

Labels come from these character spans (via the tokenizer's offsets), never from searching for a response marker
in token ids. That search is what the paper's code does (TRL's ``DataCollatorForCompletionOnlyLM``), and it fails
when the tag tokenises differently in context: a response starting with a newline merges into the tag's last token,
the match is missed and the whole example is masked. The same template object renders training examples,
``inspect`` output and inference prompts.

``data.template`` names a registered template (``tulu``, ``chat``, or one added with ``register_template``) or picks
any ``Template`` subclass by ``class_path`` with its init args, like litgpt's ``prompt_style``. What comes from the
tokenizer (its EOS token, its chat template) is filled in by ``bind`` when the data module builds the template.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from rt_lightning.data.modes import Message

Span = tuple[int, int]


@dataclass(frozen=True)
class Rendered:
    text: str
    spans: tuple[Span, ...]
    """Half-open character ranges of ``text`` that are trained."""
    data: tuple[Span, ...] = ()
    """Character ranges of ``text`` that hold data (the messages' contents) rather than template text: special-token
    text there (a literal ``</s>`` in a response) is tokenised as plain text, never as the special token."""


class Template:
    """Base class: ``render`` a training conversation, ``prompt`` an instruction for generation."""

    def bind(self, tokenizer) -> "Template":
        """This template ready for ``tokenizer`` (a copy when something is filled in from it)."""
        return self

    def render(self, messages: Sequence[Message]) -> Rendered:
        raise NotImplementedError

    def prompt(self, instruction: str) -> str:
        """The inference prompt for one instruction (the same for IT and RT models)."""
        raise NotImplementedError

    def __repr__(self) -> str:  # settings only; "_x" attributes are runtime state (e.g. a bound tokenizer)
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


TULU_USER = "<|user|>\n{content}\n"
TULU_ASSISTANT = "<|assistant|>\n{content}{eos}\n"
TULU_SYSTEM = "<|system|>\n{content}\n"


class TextTemplate(Template):
    """A plain-text template given by one format string per role; ``{content}`` and ``{eos}`` are filled in.

    The trained span of an assistant message runs from ``{content}`` to the end of its format string, so the
    end-of-turn text (EOS and newline for Tulu) is learned too — that is how the model learns to stop. Select it with
    ``template: {class_path: rt_lightning.data.TextTemplate, init_args: {user: ..., assistant: ...}}``.
    """

    def __init__(self, user: str = TULU_USER, assistant: str = TULU_ASSISTANT, system: str = TULU_SYSTEM,
                 eos_token: Optional[str] = None):
        """
        Args:
            user: Format of a user turn; ``{content}`` and ``{eos}`` are filled in.
            assistant: Format of an assistant turn; trained from ``{content}`` to its end.
            system: Format of a system turn.
            eos_token: Text of ``{eos}``; null = the tokenizer's EOS token, filled in by ``bind``.
        """
        if assistant.count("{content}") != 1:
            raise ValueError(f"assistant format must contain '{{content}}' exactly once: {assistant!r}")
        self.eos_token = eos_token
        self.formats = {"system": system, "user": user, "assistant": assistant}

    def bind(self, tokenizer) -> "TextTemplate":
        if self.eos_token is not None:
            return self
        bound = copy.copy(self)
        bound.eos_token = tokenizer.eos_token
        return bound

    def _fill(self, fmt: str, content: str) -> tuple[str, int]:
        """Return the filled string and where the content starts in it."""
        if self.eos_token is None:
            raise ValueError(f"{type(self).__name__} has no EOS token yet: call bind(tokenizer) or give eos_token")
        head, tail = fmt.split("{content}")
        head = head.replace("{eos}", self.eos_token)
        return head + content + tail.replace("{eos}", self.eos_token), len(head)

    def render(self, messages: Sequence[Message]) -> Rendered:
        parts, spans, data, offset = [], [], [], 0
        for message in messages:
            if message.role not in self.formats:
                raise ValueError(f"template has no format for role {message.role!r}")
            piece, content_start = self._fill(self.formats[message.role], message.content)
            if message.trainable:
                spans.append((offset + content_start, offset + len(piece)))
            data.append((offset + content_start, offset + content_start + len(message.content)))
            parts.append(piece)
            offset += len(piece)
        return Rendered("".join(parts), tuple(spans), tuple(data))

    def prompt(self, instruction: str) -> str:
        user, _ = self._fill(self.formats["user"], instruction)
        return user + self.formats["assistant"].split("{content}")[0].replace("{eos}", self.eos_token)


class Tulu(TextTemplate):
    """The paper's template: ``<|user|>\\n{instruction}\\n<|assistant|>\\n{response}{EOS}\\n`` (tags are plain text)."""

    def __init__(self, eos_token: Optional[str] = None):
        """
        Args:
            eos_token: Text of the EOS token; null = the tokenizer's, filled in by ``bind``.
        """
        super().__init__(TULU_USER, TULU_ASSISTANT, TULU_SYSTEM, eos_token)


def tulu(eos_token: str) -> Tulu:
    """The paper's template with ``eos_token`` filled in."""
    return Tulu(eos_token)


class ChatTemplate(Template):
    """The tokenizer's own Jinja chat template. Assistant spans are found by rendering growing prefixes.

    Each assistant span starts where the rendering of the earlier turns plus the generation prompt ends, and ends
    where the rendering including that turn ends — so end-of-turn markers are trained, headers are not.
    """

    def __init__(self):
        self._tokenizer = None  # private: filled in by ``bind``, not a setting

    def bind(self, tokenizer) -> "ChatTemplate":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; use template 'tulu' or "
                             "a TextTemplate")
        bound = ChatTemplate()
        bound._tokenizer = tokenizer
        return bound

    def _apply(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        if self._tokenizer is None:
            raise ValueError("ChatTemplate has no tokenizer yet: call bind(tokenizer)")
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        return self._tokenizer.apply_chat_template(conversation, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)

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
                                 "character spans cannot be derived — use template 'tulu' or a TextTemplate")
            spans.append((len(before), len(through)))
        return Rendered(text, tuple(spans), _find_contents(text, messages))

    def prompt(self, instruction: str) -> str:
        return self._apply([Message("user", instruction)], add_generation_prompt=True)


def _find_contents(text: str, messages: Sequence[Message]) -> tuple[Span, ...]:
    """Where each message's content lies in a chat-template rendering, searched in turn (many templates trim
    contents, so the trimmed content is tried too; a content that the template rewrote further is not found)."""
    found, position = [], 0
    for message in messages:
        for content in (message.content, message.content.strip()):
            start = text.find(content, position) if content else -1
            if start >= 0:
                found.append((start, start + len(content)))
                position = start + len(content)
                break
    return tuple(found)


TEMPLATES: dict[str, Callable[[], Template]] = {"tulu": Tulu, "chat": ChatTemplate}
"""Templates selectable by name (``data.template: tulu``); each is built without arguments."""


def register_template(name: str, factory: Callable[[], Template]) -> Callable[[], Template]:
    """Make ``factory()`` selectable as ``data.template: <name>``."""
    TEMPLATES[name] = factory
    return factory


def resolve_template(spec: str | Template) -> Template:
    """The (not yet bound) template that ``spec`` names, or ``spec`` itself when it is a ``Template``."""
    if isinstance(spec, Template):
        return spec
    if spec == "custom":
        raise ValueError("data.template 'custom' is gone: set data.template to {class_path: "
                         "rt_lightning.data.TextTemplate, init_args: {user: ..., assistant: ...}} (the formats of the "
                         "removed data.user_format / data.assistant_format)")
    if spec not in TEMPLATES:
        raise ValueError(f"Unknown template {spec!r}; choose one of {sorted(TEMPLATES)} or give a Template class_path "
                         "(e.g. rt_lightning.data.TextTemplate)")
    return TEMPLATES[spec]()


def build_template(spec: str | Template, tokenizer) -> Template:
    """The template ``spec`` (a registered name or a ``Template``) bound to ``tokenizer``."""
    return resolve_template(spec).bind(tokenizer)
