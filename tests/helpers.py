"""Callbacks used by subprocess tests through YAML ``class_path``."""

import time

from lightning.pytorch.callbacks import Callback


class SleepEveryStep(Callback):
    """Slow training down so a test can kill the process mid-epoch, after a checkpoint exists."""

    def __init__(self, seconds: float = 0.2):
        self.seconds = seconds

    def on_train_batch_end(self, *args, **kwargs):
        time.sleep(self.seconds)
