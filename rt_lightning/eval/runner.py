"""Generate for benchmarks (or score existing responses) and score them, resumably (``python -m rt_lightning eval``).

Per benchmark it writes ``<output_dir>/<name>.jsonl`` (one scored row per prompt, fsynced as written), then
``metrics.json`` and ``summary.md`` over everything done so far. Kill it and run it again: it continues.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from peft import PeftModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rt_lightning.data.templates import Template, build_template
from rt_lightning.eval.benchmark import Benchmark, BenchmarkRow
from rt_lightning.eval.benchmarks import BENCHMARKS
from rt_lightning.eval.icl import STOP_STRINGS as ICL_STOPS
from rt_lightning.eval.icl import IclPrompt
from rt_lightning.eval.options import BenchmarkSource, ModelSource, PromptFormat
from rt_lightning.eval.report import read_metrics, write_metrics, write_summary
from rt_lightning.eval.responses import read_responses
from rt_lightning.eval.results import ResultsFile
from rt_lightning.eval.scoring.nll import reference_nll
from rt_lightning.generation import Generation, GenerationConfig, generate
from rt_lightning.hub import load_causal_lm, load_tokenizer
from rt_lightning.io import FolderLock
from rt_lightning.model.checkpoint import load_module_from_checkpoint

log = logging.getLogger(__name__)


def load_model(source: ModelSource):
    """Base model (hub id / folder / embedded) plus an optional PEFT adapter folder, or an adapter-only checkpoint;
    returns ``(model, tokenizer)``."""
    if source.ckpt_path:
        module = load_module_from_checkpoint(source.ckpt_path, quantize=source.quantize, device=source.device)
        return on_device(module.model, source.device), load_tokenizer(module.hparams.model)
    device_map = {"": source.device} if source.quantize else None
    net = load_causal_lm(source.base, quantize=source.quantize, dtype=getattr(torch, source.dtype),
                         device_map=device_map)
    if source.quantize is None:
        net = net.to(source.device)
    if source.adapter:
        net = PeftModel.from_pretrained(net, source.adapter)
    return on_device(net, source.device), load_tokenizer(source.base)


def on_device(net, device) -> torch.nn.Module:
    """``net``, refused unless every weight is on ``device`` (a 4-bit model cannot be moved after loading)."""
    wanted = torch.device(device)
    elsewhere = {str(p.device) for p in net.parameters() if p.device.type != wanted.type}
    if elsewhere:
        raise RuntimeError(f"model weights are on {sorted(elsewhere)}, not on the requested device {wanted}; "
                           "nothing was evaluated")
    return net


@dataclass
class Prompter:
    """Turns instructions into prompts and generations into responses, for one prompt format."""

    format: Template | IclPrompt
    """Builds the prompt of an instruction (``.prompt(instruction)``)."""
    nll_template: Template
    """The chat template reference answers are scored in (the in-context setting has none of its own)."""
    clean: Callable[[str], str] = str
    """Turns generated text into the response (the in-context setting cuts what follows the answer)."""
    stop_strings: tuple[str, ...] = ()
    """Stop strings added to the decoding settings."""


def build_prompter(prompt: PromptFormat, tokenizer) -> Prompter:
    template = build_template(prompt.template, tokenizer)
    if prompt.icl:
        return Prompter(IclPrompt(prompt.icl, prompt.icl_prompt), template, IclPrompt.clean, tuple(ICL_STOPS))
    return Prompter(template, template)


def scored_row(benchmark: Benchmark, row: BenchmarkRow, response: str, prompt: Optional[str] = None,
               generation: Optional[Generation] = None, nll: Optional[tuple[float, int]] = None) -> dict:
    """The results-file row of one response: the prompt row, how the generation ended, the benchmark's verdicts
    and, where the benchmark has a reference answer, its NLL (a reference cut off entirely by ``max_length``
    gives no number)."""
    record = {"id": row.id, "benchmark": benchmark.name, "subset": row.subset, "instruction": row.instruction}
    if prompt is not None:
        record["prompt"] = prompt
    record["response"] = response
    if generation is not None:
        record.update(finish_reason=generation.finish_reason, num_tokens=generation.num_tokens)
    record.update(benchmark.score_response(row, response))
    if nll is not None and nll[1] > 0 and not math.isnan(nll[0]):
        record.update(reference_nll_sum=nll[0], reference_tokens=nll[1])
    return record


def reference_nlls(net, tokenizer, template: Template, benchmark: Benchmark,
                   rows: list[BenchmarkRow]) -> list[Optional[tuple[float, int]]]:
    """Per row: (summed NLL, token count) of its reference answer, or ``None`` where it has none."""
    references = [benchmark.reference(row) for row in rows]
    pairs = [(row.instruction, ref) for row, ref in zip(rows, references) if ref]
    scores = iter(reference_nll(net, tokenizer, template, pairs) if pairs else [])
    return [next(scores) if ref else None for ref in references]


@dataclass
class PendingRows:
    """One benchmark's rows still to generate for, and the results file they go to."""

    benchmark: Benchmark
    todo: list[BenchmarkRow]
    results: ResultsFile


def generate_pooled(net, tokenizer, pending: list[PendingRows], prompter: Prompter, generation: GenerationConfig,
                    with_reference_nll: bool) -> None:
    """Generate for every benchmark's remaining rows in one pass, each row written to its benchmark's file as soon
    as its batch is done (a kill loses at most that batch).

    Batches mix benchmarks (the engine sorts all prompts by length): a benchmark with a few prompts left (``--limit
    4``, a resumed run) would otherwise decode up to ``max_new_tokens`` steps in a batch of its own.
    """
    jobs = [(entry, row) for entry in pending for row in entry.todo]
    prompts = [prompter.format.prompt(row.instruction) for _, row in jobs]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn()) as progress:
        tasks = {id(entry): progress.add_task(entry.benchmark.name, total=len(entry.todo)) for entry in pending}

        def write_batch(indices: list[int], generations: list[Generation]) -> None:
            by_entry: dict[int, list[tuple[int, Generation]]] = {}
            for i, g in zip(indices, generations):
                by_entry.setdefault(id(jobs[i][0]), []).append((i, g))
            for entry in pending:
                done = by_entry.get(id(entry), [])
                if not done:
                    continue
                rows = [jobs[i][1] for i, _ in done]
                nlls = (reference_nlls(net, tokenizer, prompter.nll_template, entry.benchmark, rows)
                        if with_reference_nll else [None] * len(rows))
                for (i, g), row, nll in zip(done, rows, nlls):
                    entry.results.append(scored_row(entry.benchmark, row, prompter.clean(g.text), prompts[i], g, nll))
                progress.advance(tasks[id(entry)], len(done))

        generate(net, tokenizer, prompts, generation, on_batch=write_batch)


def _summary(benchmark: Benchmark, rows: list[BenchmarkRow], results: ResultsFile) -> dict:
    done = [results.rows[r.id] for r in rows if r.id in results]
    summary = benchmark.summarize(done)
    if len(done) < len(rows):
        summary["missing"] = len(rows) - len(done)
    return summary


def _open_results(out: Path, benchmark: Benchmark, rows: list[BenchmarkRow]) -> tuple[ResultsFile, list[BenchmarkRow]]:
    results = ResultsFile(out / f"{benchmark.name}.jsonl")
    todo = [r for r in rows if r.id not in results]
    if todo:
        log.info("%s: %d of %d rows to do (%d already done)", benchmark.name, len(todo), len(rows),
                 len(rows) - len(todo))
    return results, todo


def checked_responses(path: str, benchmark: Benchmark, data: BenchmarkSource) -> tuple[list[BenchmarkRow], dict]:
    """The benchmark's rows and the responses file matched to them, checked whole (nothing is written yet)."""
    if not benchmark.generates:
        raise ValueError(f"{benchmark.name} scores the model itself, not responses: run it with --model.*")
    rows = benchmark.rows(data.paths.get(benchmark.name), data.root, data.limit_of(benchmark.name))
    return rows, read_responses(path, benchmark, rows)


def score_responses_file(benchmark: Benchmark, rows: list[BenchmarkRow], given: dict, out: Path) -> dict:
    """Score responses made elsewhere (already checked by ``checked_responses``)."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = read_metrics(out)
    results, todo = _open_results(out, benchmark, rows)
    with results:
        for row in todo:
            if row.id in given:
                results.append(scored_row(benchmark, row, given[row.id]))
        metrics[benchmark.name] = _summary(benchmark, rows, results)
    write_metrics(out, metrics)
    return metrics


def generate_and_score(benchmarks: list[Benchmark], model: ModelSource, prompt: PromptFormat, data: BenchmarkSource,
                       generation: GenerationConfig, with_reference_nll: bool, out: Path) -> dict:
    """Load the model once, then answer every benchmark's rows not yet in its results file (the generated ones in
    one pooled pass)."""
    net, tokenizer = load_model(model)
    prompter = build_prompter(prompt, tokenizer)
    if prompter.stop_strings:
        generation = dataclasses.replace(generation, stop_strings=[*generation.stop_strings, *prompter.stop_strings])
    out.mkdir(parents=True, exist_ok=True)
    metrics = read_metrics(out)
    with ExitStack() as files:
        opened = []
        for benchmark in benchmarks:
            rows = benchmark.rows(data.paths.get(benchmark.name), data.root, data.limit_of(benchmark.name))
            results, todo = _open_results(out, benchmark, rows)
            opened.append((benchmark, rows, files.enter_context(results), todo))
        for benchmark, rows, results, todo in opened:
            if todo and not benchmark.generates:  # scored from the model's log-probabilities, in the training template
                for record in benchmark.score_model(net, tokenizer, prompter.nll_template, rows, todo):
                    results.append(record)
                metrics[benchmark.name] = _summary(benchmark, rows, results)
                write_metrics(out, metrics)
        pending = [PendingRows(b, todo, results) for b, _, results, todo in opened if todo and b.generates]
        if pending:
            generate_pooled(net, tokenizer, pending, prompter, generation, with_reference_nll)
        for benchmark, rows, results, _ in opened:
            metrics[benchmark.name] = _summary(benchmark, rows, results)
    write_metrics(out, metrics)
    return metrics


def evaluate(
    benchmarks: list[str],
    output_dir: str,
    model: ModelSource = ModelSource(),
    responses: Optional[str] = None,
    data: BenchmarkSource = BenchmarkSource(),
    prompt: PromptFormat = PromptFormat(),
    generation: GenerationConfig = GenerationConfig(),
    reference_nll: bool = True,
) -> dict:
    """Evaluate a model (or a file of responses) on benchmarks, resumably; returns the metrics of ``output_dir``.

    Args:
        benchmarks: Names from the registry: advbench, harmbench, malicious_instruct, xstest, ifeval, alpaca_eval,
            just_eval, mt_bench, response_ranking (no generation: the instructability probe).
        output_dir: Folder for ``<benchmark>.jsonl``, ``metrics.json`` and ``summary.md``; rerunning continues there.
        model: The model to generate with (not needed with ``responses``).
        responses: Score this JSONL of ``{response, id or prompt}`` rows instead of generating (one benchmark).
        data: Where the benchmarks' prompts come from.
        prompt: How instructions are turned into prompts.
        generation: Decoding settings.
        reference_nll: Also score reference answers' NLL where a benchmark has them (alpaca_eval, just_eval).
    """
    benchmarks = list(dict.fromkeys(benchmarks))  # a name given twice would open its results file twice
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise ValueError(f"Unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    if responses and len(benchmarks) != 1:
        raise ValueError("--responses scores one benchmark at a time")
    if not responses and not model.given:
        raise ValueError("give --model.base (with optional --model.adapter), --model.ckpt_path, or --responses")
    out = Path(output_dir)
    # A bad responses file stops before the output folder is even created.
    checked = checked_responses(responses, BENCHMARKS[benchmarks[0]], data) if responses else None
    with FolderLock(out, "eval"):  # two writers of one folder would each write every row
        if checked:
            metrics = score_responses_file(BENCHMARKS[benchmarks[0]], *checked, out)
        else:
            metrics = generate_and_score([BENCHMARKS[b] for b in benchmarks], model, prompt, data, generation,
                                         reference_nll, out)
        write_summary(out, metrics)
    return metrics
