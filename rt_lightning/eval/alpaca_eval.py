"""Exports of eval outputs for other tools.

AlpacaEval: ``model_outputs.json`` is a JSON list of ``{instruction, output, generator, dataset}``; the paper runs
``alpaca_eval --model_outputs rt.json --reference_outputs it.json`` (the IT model's outputs as the reference) to get
the length-controlled win rate of RT against its IT counterpart.

lm-eval: export a merged model (``python -m rt_lightning export --ckpt_path … --output out --merge``), then
``lm_eval --model hf --model_args pretrained=out/merged --tasks gsm8k_cot_llama,ai2_arc,hellaswag,openbookqa,piqa,mmlu``
(the paper also passes ``--apply_chat_template`` with the Tulu template and uses vLLM as the backend).
"""

from __future__ import annotations

import json

from rt_lightning.eval.benchmarks import load_benchmark
from rt_lightning.io import atomic_write_text, read_jsonl


def to_alpaca_eval(results_jsonl: str, output: str, generator: str, data_root: str | None = None,
                   path: str | None = None) -> int:
    """Write ``output`` (AlpacaEval ``model_outputs.json``) from an ``eval`` results file of the alpaca_eval benchmark.

    Rows are written in the benchmark's own order (the order AlpacaEval pairs outputs in) and every one of its
    instructions must have an output; a missing one is an error naming it rather than a silently shorter file.
    """
    rows = {row["id"]: row for row in read_jsonl(results_jsonl)}
    benchmark = load_benchmark("alpaca_eval", path, data_root) if (path or data_root) else None
    order = [b.id for b in benchmark] if benchmark else sorted(rows, key=lambda i: int(i.rsplit("-", 1)[1]))
    missing = [i for i in order if i not in rows]
    if missing:
        raise ValueError(f"{results_jsonl}: {len(missing)} AlpacaEval instruction(s) have no output, "
                         f"e.g. {missing[:3]}")
    dataset = {b.id: b.extra.get("dataset", "") for b in benchmark} if benchmark else {}
    outputs = [{"instruction": rows[i]["instruction"], "output": rows[i]["response"], "generator": generator,
                "dataset": dataset.get(i, rows[i].get("subset", ""))} for i in order]
    atomic_write_text(output, json.dumps(outputs, ensure_ascii=False, indent=2))
    return len(outputs)
