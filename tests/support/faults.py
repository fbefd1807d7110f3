"""Faults injected into subprocess runs through YAML ``class_path``."""

import os

from lightning.pytorch.callbacks import Callback


class ExitAtStep(Callback):
    """End the process like ``kill -9`` (no cleanup, no final checkpoint) when training reaches ``step``.

    It fires at the start of that step, so every checkpoint of the steps before it has been written.
    """

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args, **kwargs):
        if trainer.global_step == self.step:
            os._exit(137)
