"""Data: sources → records → mixture → mode → template → tokens."""

from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.data.mixtures import RefusalMixture
from rt_lightning.data.modes import MODES, Message, register_mode
from rt_lightning.data.records import DataError, FieldLayout, Record, load_records
from rt_lightning.data.templates import (
    ChatTemplate,
    Rendered,
    Template,
    TextTemplate,
    Tulu,
    build_template,
    register_template,
    tulu,
)

__all__ = ["SFTDataModule", "RefusalMixture", "MODES", "Message", "register_mode", "DataError", "FieldLayout", "Record",
           "load_records", "ChatTemplate", "Rendered", "Template", "TextTemplate", "Tulu", "build_template",
           "register_template", "tulu"]
