"""``RunSummary``: a few lines at the end of ``fit`` that tell a newcomer what happened and what to run next.

Validation loss per epoch, the generation metrics of the last epoch, wall time, where the metrics, sample generations
and checkpoints were written, and the ``eval`` command for the last checkpoint.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class RunSummary(L.Callback):
    def __init__(self, eval_benchmarks: str = "[advbench,xstest,ifeval]", data_root: str = "../shared/data"):
        """
        Args:
            eval_benchmarks: Benchmarks named in the suggested ``eval`` command.
            data_root: Data folder named in the suggested ``eval`` command.
        """
        self.eval_benchmarks, self.data_root = eval_benchmarks, data_root
        self.val_losses: list[tuple[int, float]] = []
        self.start = time.perf_counter()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get("val_loss")
        if not trainer.sanity_checking and value is not None:
            self.val_losses.append((trainer.current_epoch, float(value)))

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            print(self.render(trainer), flush=True)

    def render(self, trainer) -> str:
        minutes = (time.perf_counter() - self.start) / 60
        lines = ["", f"Done: {trainer.current_epoch} epoch(s), {trainer.global_step} steps in {minutes:.1f} min."]
        if self.val_losses:
            lines.append("Validation loss: " + ", ".join(f"epoch {e}: {v:.4f}" for e, v in self.val_losses))
        by_benchmark: dict[str, list[str]] = {}
        for key, value in sorted(trainer.callback_metrics.items()):
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "gen":  # gen/<benchmark>/<metric>, from GenerationValidation
                by_benchmark.setdefault(parts[1], []).append(f"{parts[2]} {float(value):.3g}")
        if by_benchmark:
            lines.append("Generation metrics (last epoch):")
            lines += [f"  {name}: {', '.join(items)}" for name, items in by_benchmark.items()]
        for logger in trainer.loggers:
            if getattr(logger, "log_dir", None):
                lines.append(f"Metrics and sample generations: {Path(logger.log_dir)}/ (metrics.csv, "
                             "generations-epoch*.csv)")
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        last = checkpoint and (checkpoint.last_model_path or checkpoint.best_model_path)
        if last:
            lines.append(f"Checkpoint (adapter only): {last}")
            lines.append("Next, evaluate it:")
            lines.append(f"  python -m rt_lightning eval --model.ckpt_path {shlex.quote(last)} --benchmarks "
                         f"{shlex.quote(self.eval_benchmarks)} --data.root {shlex.quote(self.data_root)} "
                         "--data.limit 16 --output_dir runs/eval/quickstart")
        return "\n".join(lines)
