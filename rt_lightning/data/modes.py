"""Modes: how one ``Record`` becomes the conversation that is trained — the whole IT / RT switch lives here.

A mode is a function ``Record -> list[Message]``. Register your own with ``register_mode`` (a notebook can add one
in a few lines) and select it with ``data.mode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rt_lightning.data.records import Record


@dataclass(frozen=True)
class Message:
    role: str
    """``system``, ``user`` or ``assistant``."""
    content: str
    trainable: bool = False
    """Whether this message's rendered span (content and its end-of-turn text) gets loss."""


Mode = Callable[[Record], list[Message]]


def instruction_tuning(record: Record) -> list[Message]:
    """IT: the user turn holds the instruction; only the response is trained."""
    return [Message("user", record.instruction), Message("assistant", record.response, trainable=True)]


def response_tuning(record: Record) -> list[Message]:
    """RT (An et al.): the instruction is removed together with the whole user turn — no user tag at all."""
    return [Message("assistant", record.response, trainable=True)]


def response_tuning_empty_user(record: Record) -> list[Message]:
    """RT as in Hewitt et al. (2024): the user turn is kept but its instruction is the empty string."""
    return [Message("user", ""), Message("assistant", record.response, trainable=True)]


MODES: dict[str, Mode] = {"it": instruction_tuning, "rt": response_tuning, "rt_empty": response_tuning_empty_user}


def register_mode(name: str, mode: Mode) -> Mode:
    """Make ``mode`` selectable as ``data.mode: <name>``."""
    MODES[name] = mode
    return mode


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise ValueError(f"Unknown mode {name!r}; choose one of {sorted(MODES)} or add one with register_mode")
    return MODES[name]
