"""``GenerationValidation``: at the end of validation, generate for a small prompt mix and log what the paper
measures — refusal rate on harmful prompts, false refusals on safe ones, IFEval accuracy, stop rate, length — plus
a table of sample generations, through each logger's own API. Every rank generates for its own shard and the rows
are gathered. Under sharded strategies (FSDP1, FSDP2) the ranks decode in lockstep, since every forward gathers
weights; shards may differ in size."""

from __future__ import annotations

import csv
import functools
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from rt_lightning.eval.benchmark import Benchmark, BenchmarkRow, HelpfulBenchmark
from rt_lightning.eval.benchmarks import BENCHMARKS
from rt_lightning.generation import GenerationConfig, generate

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ["benchmark", "id", "subset", "instruction", "response", "finish_reason", "refused"]
"""Columns of the sample-generations table written to the loggers."""


def _given_rows(rows: list[BenchmarkRow], _file) -> list[BenchmarkRow]:
    return rows


def heldout_benchmark(rows: list[BenchmarkRow]) -> HelpfulBenchmark:
    """The data module's held-out instructions, scored like any helpful set (no reference NLL: no reference)."""
    # A partial, not a lambda: the callback stays picklable (process-spawning strategies pickle it).
    return HelpfulBenchmark("heldout", hub=None, local=None, load=functools.partial(_given_rows, rows))


class GenerationValidation(L.Callback):
    def __init__(self, benchmarks: Optional[dict[str, int]] = None, heldout: int = 16, data_root: Optional[str] = None,
                 paths: Optional[dict[str, str]] = None, every_n_epochs: int = 1,
                 generation: Optional[GenerationConfig] = None, log_samples: int = 8):
        """
        Args:
            benchmarks: Benchmark name → prompts per subset, e.g. ``{advbench: 16, xstest: 16, ifeval: 16}``.
            heldout: Instructions from the data module's validation file to generate for (0 for none).
            data_root: Folder laid out like ``../shared/data`` to read benchmarks from (else the hub).
            paths: Per-benchmark local files, overriding ``data_root``.
            every_n_epochs: Run at the end of every N-th validation epoch.
            generation: Decoding settings (default: greedy, 128 new tokens).
            log_samples: Sample generations per benchmark written to the logs.
        """
        self.benchmarks = {"advbench": 16, "xstest": 16, "ifeval": 16} if benchmarks is None else benchmarks
        self.heldout, self.data_root, self.paths, self.every_n_epochs = heldout, data_root, paths or {}, every_n_epochs
        self.generation = generation or GenerationConfig(max_new_tokens=128)
        self.log_samples = log_samples
        self._rows: list[tuple[Benchmark, BenchmarkRow]] = []
        self._scored: list[tuple[Benchmark, list[BenchmarkRow]]] = []  # benchmarks scored without generating
        self._epoch_start = time.perf_counter()

    def setup(self, trainer, pl_module, stage: str) -> None:
        for name, limit in self.benchmarks.items():
            benchmark = BENCHMARKS[name]
            local = benchmark.local_file(self.paths.get(name), self.data_root)
            if local is not None and not local.is_file():
                # A local data folder without this set (e.g. a machine without the shared data): skip it, loudly,
                # rather than fail the training run or reach for the hub.
                log.warning("GenerationValidation: %s not found at %s; skipping that benchmark", name, local)
                continue
            rows = benchmark.rows(self.paths.get(name), self.data_root, limit)
            if benchmark.generates:
                self._rows += [(benchmark, row) for row in rows]
            else:
                self._scored.append((benchmark, rows))
        datamodule = trainer.datamodule
        if self.heldout and getattr(datamodule, "val", None):
            records = datamodule.read_records(datamodule.val)[: self.heldout]
            heldout = heldout_benchmark([BenchmarkRow(f"heldout-{r.row}", r.instruction) for r in records])
            self._rows += [(heldout, row) for row in heldout.rows()]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not (self._rows or self._scored) or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        start = time.perf_counter()
        datamodule = trainer.datamodule
        tokenizer, template = datamodule.hf_tokenizer, datamodule.build_template()
        shard = self._rows[trainer.global_rank::trainer.world_size]
        prompts = [template.prompt(r.instruction) for _, r in shard]
        # Sharded weights are gathered in every forward, a collective: ranks decode in lockstep (a rank whose
        # shard is done, or empty, runs dummy forwards until all are done).
        sharded = isinstance(trainer.strategy, (ModelParallelStrategy, FSDPStrategy))
        with _fsdp1_generation_context(trainer.strategy):
            generations = (generate(pl_module.model, tokenizer, prompts, self.generation, synced_gpus=sharded)
                           if self._rows else [])
            # Every rank scores all rows of the generation-free benchmarks: the same forwards on every rank, so
            # sharded weights gather in step, and no rows need gathering afterwards.
            scored = {benchmark: benchmark.score_model(pl_module.model, tokenizer, template, rows, rows)
                      for benchmark, rows in self._scored}
        rows = [{"benchmark": benchmark.name, "id": row.id, "subset": row.subset, "instruction": row.instruction,
                 "response": g.text, "finish_reason": g.finish_reason, "num_tokens": g.num_tokens,
                 **benchmark.score_response(row, g.text)} for (benchmark, row), g in zip(shard, generations)]
        rows = self._gather(rows, trainer.world_size)
        seconds = time.perf_counter() - start
        for name, benchmark in {b.name: b for b, _ in self._rows}.items():
            summary = benchmark.summarize([r for r in rows if r["benchmark"] == name])
            for key, value in summary.items():
                if key != "n" and isinstance(value, (int, float)):
                    pl_module.log(f"gen/{name}/{key}", float(value), on_epoch=True, sync_dist=False)
        for benchmark, result_rows in scored.items():
            for key, value in benchmark.summarize(result_rows).items():
                if key != "n" and isinstance(value, (int, float)):
                    pl_module.log(f"gen/{benchmark.name}/{key}", float(value), on_epoch=True, sync_dist=False)
        pl_module.log("gen/seconds", seconds, on_epoch=True)
        if trainer.is_global_zero:
            self._log_samples(trainer, rows)
            epoch_seconds = time.perf_counter() - self._epoch_start
            new_tokens = sum(r["num_tokens"] for r in rows)
            print(f"GenerationValidation: {len(rows)} prompts, {new_tokens} new tokens in {seconds:.1f} s "
                  f"({100 * seconds / max(epoch_seconds, 1e-9):.0f}% of this epoch's {epoch_seconds:.1f} s)")

    @staticmethod
    def _gather(rows: list[dict], world_size: int) -> list[dict]:
        if world_size == 1 or not torch.distributed.is_initialized():
            return rows
        shards: list = [None] * world_size
        torch.distributed.all_gather_object(shards, rows)
        return [row for shard in shards for row in shard]

    def _log_samples(self, trainer, rows: list[dict]) -> None:
        """The first ``log_samples`` rows of each benchmark, as a table in every logger that can show one."""
        samples, seen = [], {}
        for row in rows:
            seen[row["benchmark"]] = seen.get(row["benchmark"], 0) + 1
            if seen[row["benchmark"]] <= self.log_samples:
                samples.append(row)
        epoch, step = trainer.current_epoch, trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="generations", columns=SAMPLE_COLUMNS,
                                 data=[[row[c] for c in SAMPLE_COLUMNS] for row in samples], step=step)
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_table(logger.run_id, {c: [row[c] for row in samples] for c in SAMPLE_COLUMNS},
                                            artifact_file=f"generations-epoch{epoch}.json")
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("generations", markdown_table(samples), step)
            elif getattr(logger, "log_dir", None):  # CSVLogger and any other logger that writes to a folder
                write_csv(Path(logger.log_dir) / f"generations-epoch{epoch}.csv", samples)


def markdown_table(rows: list[dict]) -> str:
    """``SAMPLE_COLUMNS`` of ``rows`` as a Markdown table (TensorBoard renders text summaries as Markdown)."""

    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", "<br>")

    header = "| " + " | ".join(SAMPLE_COLUMNS) + " |\n|" + "---|" * len(SAMPLE_COLUMNS) + "\n"
    return header + "\n".join("| " + " | ".join(cell(r[c]) for c in SAMPLE_COLUMNS) + " |" for r in rows)


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SAMPLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@contextmanager
def _fsdp1_generation_context(strategy):
    """What FSDP1's root forward would provide, for generation that runs outside it.

    FSDP1 shards the root unit's own weights too (embeddings, final norm, LM head) and gathers them only inside the
    root's forward: gathered here; the layer units gather themselves. And its mixed precision casts each unit's
    weights to bf16 only once that unit runs: PEFT, outside autocast, would first cast a layer's input to the still
    fp32 LoRA weight and then meet the bf16 one (a dtype error at the first generated token), so generation runs in
    the precision plugin's forward context (autocast for bf16-mixed), as training and validation steps do."""
    if not isinstance(strategy, FSDPStrategy):
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel  # deferred: torch builds may lack distributed

    with FullyShardedDataParallel.summon_full_params(strategy.model, recurse=False, writeback=False), \
            strategy.precision_plugin.forward_context():
        yield
