"""Generate for benchmarks (or score existing responses) and score them, resumably (``python -m rt_lightning eval``).

Per benchmark it writes ``<output_dir>/<name>.jsonl`` (one scored row per prompt, flushed as written), then
``metrics.json`` and ``summary.md`` over everything done so far. Kill it and run it again: it continues.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Optional

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rt_lightning.data.templates import build_template
from rt_lightning.eval.benchmarks import BENCHMARKS, BenchmarkRow, load_benchmark
from rt_lightning.eval.icl import STOP_STRINGS as ICL_STOPS
from rt_lightning.eval.icl import IclPrompt
from rt_lightning.eval.scoring.ifeval import score_ifeval
from rt_lightning.eval.scoring.nll import reference_nll
from rt_lightning.eval.scoring.refusal import refusal_verdict
from rt_lightning.eval.results import ResultsFile
from rt_lightning.eval.scoring.metrics import summarize
from rt_lightning.generation import GenerationConfig, Generation, generate
from rt_lightning.hub import load_causal_lm, load_tokenizer
from rt_lightning.model.checkpoint import load_module_from_checkpoint

log = logging.getLogger(__name__)


def score_row(kind: str, row: BenchmarkRow, response: str) -> dict:
    """Per-row verdicts kept in the output: refusal (with its evidence) for every row, IFEval checks for IFEval."""
    verdict = refusal_verdict(response, row.instruction)
    scored = {"refused": verdict.refused, "refusal_reason": verdict.reason, "refusal_evidence": list(verdict.evidence)}
    if kind == "ifeval":
        (result,), _ = score_ifeval([{"prompt": row.instruction, "response": response, **row.extra}])
        scored["ifeval"] = result
    return scored


def load_model(model: str, adapter: Optional[str], ckpt_path: Optional[str], quantize: Optional[str], dtype: str,
               device: str):
    """Base model (hub id / folder / embedded) plus an optional PEFT adapter folder or adapter-only checkpoint."""
    if ckpt_path:
        module = load_module_from_checkpoint(ckpt_path, quantize=quantize)
        return module.model.to(device) if quantize is None else module.model, load_tokenizer(module.hparams.model)
    device_map = {"": device} if quantize else None
    net = load_causal_lm(model, quantize=quantize, dtype=getattr(torch, dtype), device_map=device_map)
    if quantize is None:
        net = net.to(device)
    if adapter:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, adapter)
    return net, load_tokenizer(model)


def _responses_by_row(path: str, rows: list[BenchmarkRow]) -> dict[str, str]:
    """Match an external generations file to benchmark rows, by ``id`` when it has one, else by prompt text."""
    by_id = {r.id: r for r in rows}
    by_prompt = {r.instruction.strip(): r for r in rows}
    matched: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line_number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            item = json.loads(line)
            if "response" not in item:
                raise ValueError(f"{path}, line {line_number}: missing field 'response'")
            row = by_id.get(str(item.get("id"))) or by_prompt.get(str(item.get("prompt", "")).strip())
            if row is None:
                raise ValueError(f"{path}, line {line_number}: prompt matches no row of this benchmark")
            matched[row.id] = item["response"]
    return matched


def evaluate(
    benchmarks: list[str],
    output_dir: str,
    model: Optional[str] = None,
    adapter: Optional[str] = None,
    ckpt_path: Optional[str] = None,
    responses: Optional[str] = None,
    data_root: Optional[str] = None,
    paths: Optional[dict[str, str]] = None,
    limit: Optional[int] = None,
    template: str = "tulu",
    icl: Optional[str] = None,
    icl_prompt: Optional[str] = None,
    quantize: Optional[str] = None,
    dtype: str = "bfloat16",
    device: str = "cpu",
    generation: GenerationConfig = GenerationConfig(),
    reference_nll: bool = True,
) -> dict:
    """Evaluate a model (or a file of responses) on benchmarks, resumably.

    Args:
        benchmarks: Names from the registry: advbench, harmbench, malicious_instruct, xstest, ifeval, alpaca_eval,
            just_eval, mt_bench.
        output_dir: Folder for ``<benchmark>.jsonl``, ``metrics.json`` and ``summary.md``; rerunning continues there.
        model: Base model: hub id, local folder or ``embedded:gemma-3-270m``.
        adapter: A PEFT adapter folder to put on the base (``export`` writes one).
        ckpt_path: An adapter-only checkpoint from ``fit`` (its hyper-parameters name the base model).
        responses: Score this JSONL of ``{prompt, response[, id]}`` rows instead of generating (one benchmark).
        data_root: A folder laid out like ``../shared/data``; benchmarks load from there instead of the hub.
        paths: Per-benchmark local files, overriding ``data_root`` (``{"ifeval": "my.jsonl"}``).
        limit: First N prompts of each benchmark (of each subset for two-sided sets such as XSTest).
        template: Prompt format: ``tulu`` (``<|user|>\\n{instruction}\\n<|assistant|>\\n``, the paper's) or ``chat``.
        icl: In-context setting for an untuned base model instead of ``template``: zeroshot, urial or urial_r
            (stops at ``# Query:``/``# Answer:``/``# Instruction``, trailing backticks stripped).
        icl_prompt: The URIAL prompt file (urial, urial_r) or a 0-shot template file; ``{instruction}`` is filled in.
        quantize: ``nf4`` to load the base in 4-bit.
        dtype: Dtype of the base weights.
        device: ``cpu``, ``cuda``, ``cuda:1`` ...
        generation: Decoding settings.
        reference_nll: Also score reference answers' NLL where a benchmark has them (alpaca_eval, just_eval).
    """
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise ValueError(f"Unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    if responses and len(benchmarks) != 1:
        raise ValueError("--responses scores one benchmark at a time")
    if not responses and not (model or ckpt_path):
        raise ValueError("give --model (with optional --adapter), --ckpt_path, or --responses")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = tokenizer = prompt_template = nll_template = None
    clean = str
    if not responses:
        net, tokenizer = load_model(model, adapter, ckpt_path, quantize, dtype, device)
        prompt_template = nll_template = build_template(template, tokenizer)
        if icl:
            prompt_template, clean = IclPrompt(icl, icl_prompt), IclPrompt.clean
            generation = dataclasses.replace(generation, stop_strings=[*generation.stop_strings, *ICL_STOPS])
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    for name in benchmarks:
        kind = BENCHMARKS[name].kind
        rows = load_benchmark(name, (paths or {}).get(name), data_root, limit)
        with ResultsFile(out / f"{name}.jsonl") as results:
            todo = [r for r in rows if r.id not in results]
            if todo:
                log.info("%s: %d of %d rows to do (%d already done)", name, len(todo), len(rows), len(rows) - len(todo))
            if responses:
                given = _responses_by_row(responses, rows)
                for row in todo:
                    if row.id in given:
                        results.append({"id": row.id, "benchmark": name, "subset": row.subset,
                                        "instruction": row.instruction, "response": given[row.id],
                                        **score_row(kind, row, given[row.id])})
            elif todo:
                prompts = [prompt_template.prompt(r.instruction) for r in todo]
                with Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              TextColumn("eta"), TimeRemainingColumn()) as progress:
                    task = progress.add_task(name, total=len(todo))

                    def write(indices: list[int], generations: list[Generation]) -> None:
                        nll = [None] * len(indices)
                        if reference_nll and kind == "helpful":
                            pairs = [(todo[i].instruction, todo[i].extra["reference"]) for i in indices
                                     if todo[i].extra.get("reference")]
                            scores = iter(_nll(net, tokenizer, nll_template, pairs) if pairs else [])
                            nll = [next(scores) if todo[i].extra.get("reference") else None for i in indices]
                        for i, g, n in zip(indices, generations, nll):
                            row, text = todo[i], clean(g.text)
                            record = {"id": row.id, "benchmark": name, "subset": row.subset,
                                      "instruction": row.instruction, "prompt": prompts[i], "response": text,
                                      "finish_reason": g.finish_reason, "num_tokens": g.num_tokens,
                                      **score_row(kind, row, text)}
                            if n is not None and n[1] > 0 and not math.isnan(n[0]):
                                record.update(reference_nll_sum=n[0], reference_tokens=n[1])
                            results.append(record)
                        progress.advance(task, len(indices))

                    generate(net, tokenizer, prompts, generation, on_batch=write)
            wanted = {r.id for r in rows}
            done = [results.rows[r.id] for r in rows if r.id in results]
        metrics[name] = summarize(kind, done)
        if len(done) < len(wanted):
            metrics[name]["missing"] = len(wanted) - len(done)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "summary.md").write_text(markdown_summary(metrics))
    return metrics


def _nll(net, tokenizer, template, pairs):
    return reference_nll(net, tokenizer, template, pairs)


def markdown_summary(metrics: dict) -> str:
    lines = ["# Evaluation summary", "", "| benchmark | n | metric | value |", "|---|---|---|---|"]
    for name, values in metrics.items():
        for key, value in values.items():
            if key == "n":
                continue
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"| {name} | {values.get('n', '')} | {key} | {shown} |")
    return "\n".join(lines) + "\n"
