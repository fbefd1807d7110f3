"""Data: sources → records → mixture → mode → template → tokens."""

from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.data.modes import MODES, Message, register_mode
from rt_lightning.data.records import DataError, Record, load_records
from rt_lightning.data.templates import Rendered, Template, TextTemplate, build_template, tulu

__all__ = ["SFTDataModule", "MODES", "Message", "register_mode", "DataError", "Record", "load_records", "Rendered",
           "Template", "TextTemplate", "build_template", "tulu"]
