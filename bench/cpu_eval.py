"""The README's ``eval`` command on CPU, end to end, now against an older checkout on the same checkpoint.

Runs ``python -m rt_lightning eval --ckpt_path CKPT --benchmarks [...] --limit N`` as a user would (a fresh
process: imports, model load, generation, scoring), once per variant per round, interleaved:

- ``now``: this checkout.
- ``before``: ``--before DIR`` (e.g. ``git worktree add /tmp/before <commit>``), run from its own folder. The
  checkpoint is copied with the hyper-parameters that checkout's module does not take removed, so it loads there.

Prints per variant: wall seconds; start-up seconds (the same command rerun on its finished folder: imports, model
load, summary); generation seconds (the difference); new tokens; tokens/s over the generation and over the wall; and
how many rows' greedy text differs from ``before`` (bf16 batches of other shapes may round differently; the first
differing token is reported). Ends with one JSON line. No timed asserts.

    python bench/cpu_eval.py --ckpt runs/quickstart/checkpoints/last.ckpt --before /tmp/before --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rt_lightning.hub import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# Which hyper-parameters an older ResponseTuningModule accepts, asked of that checkout's own code.
_SIGNATURE = ("import inspect, json; from rt_lightning.model.module import ResponseTuningModule as M; "
              "print(json.dumps(list(inspect.signature(M.__init__).parameters)))")


def checkpoint_for(checkout: Path, ckpt: Path, folder: Path) -> Path:
    """``ckpt`` as ``checkout``'s code can load it: hyper-parameters it does not know are dropped."""
    out = subprocess.run([sys.executable, "-c", _SIGNATURE], cwd=checkout, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(checkout)})
    if out.returncode:
        raise RuntimeError(f"could not read {checkout}'s module signature: {out.stderr[-1500:]}")
    known = set(json.loads(out.stdout.strip().splitlines()[-1]))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    dropped = sorted(k for k in state["hyper_parameters"] if k not in known)
    state["hyper_parameters"] = {k: v for k, v in state["hyper_parameters"].items() if k in known}
    path = folder / "before.ckpt"
    torch.save(state, path)
    print(f"before: checkpoint hyper-parameters dropped for the old module: {dropped}")
    return path


def run_eval(checkout: Path, ckpt: Path, out: Path, args) -> dict:
    """Wall of the command, and of the same command again on its finished folder (start-up, model load and the
    summary; nothing left to generate): their difference is the generation and scoring."""
    # The flat flags: older checkouts know only these, and today's eval still takes them.
    command = [sys.executable, "-m", "rt_lightning", "eval", "--ckpt_path", str(ckpt),
               "--benchmarks", f"[{args.benchmarks}]", "--data_root", args.data_root, "--limit", str(args.limit),
               "--generation.max_new_tokens", str(args.max_new_tokens), "--output_dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": str(args.threads)}
    walls = []
    for _ in range(2):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        if done.returncode:
            raise RuntimeError(f"eval in {checkout} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    rows = {}
    for file in sorted(out.glob("*.jsonl")):
        for line in file.read_text().splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
    return {"wall_s": walls[0], "startup_s": walls[1], "generation_s": walls[0] - walls[1], "rows": rows}


def divergence(tokenizer, ours: dict, theirs: dict) -> dict:
    """Rows whose response differs, and after how many tokens (of the shorter tokenisation) they part."""
    first = []
    for key, row in ours.items():
        a, b = row["response"], theirs[key]["response"]
        if a != b:
            x, y = tokenizer(a)["input_ids"], tokenizer(b)["input_ids"]
            first.append(next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y))))
    return {"rows_diverging": len(first), "of": len(ours), "first_divergence_tokens": sorted(first)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=str(ROOT / "runs/quickstart/checkpoints/last.ckpt"))
    parser.add_argument("--before", help="an older checkout to compare with")
    parser.add_argument("--benchmarks", default="advbench,xstest,ifeval")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--data_root", default=str(SHARED))
    args = parser.parse_args()
    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        sys.exit(f"no checkpoint at {ckpt}: run `make demo` first or pass --ckpt")
    if not Path(args.data_root).is_dir():
        sys.exit(f"no benchmark data at {args.data_root} (../shared/data): pass --data_root")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        variants = {"now": (ROOT, ckpt)}
        if args.before:
            variants["before"] = (Path(args.before).resolve(), checkpoint_for(Path(args.before), ckpt, scratch))
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for round_index in range(args.rounds):
            for name, (checkout, path) in variants.items():
                result = run_eval(checkout, path, scratch / f"{name}-{round_index}", args)
                tokens = sum(r.get("num_tokens", 0) for r in result["rows"].values())
                result.update(new_tokens=tokens)
                runs[name].append(result)
                print(f"round {round_index} {name:7s} wall {result['wall_s']:6.1f} s, start-up "
                      f"{result['startup_s']:5.1f} s, generation {result['generation_s']:6.1f} s, {tokens} new tokens",
                      flush=True)
    report = {}
    for name, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        generation = statistics.median(r["generation_s"] for r in results)
        tokens = results[0]["new_tokens"]
        report[name] = {"wall_s": wall, "startup_s": statistics.median(r["startup_s"] for r in results),
                        "generation_s": generation, "new_tokens": tokens,
                        "tok_s_generation": tokens / generation if generation else None, "tok_s_wall": tokens / wall}
    if "before" in report:
        for name, figures in report.items():
            figures["wall_ratio_to_before"] = report["before"]["wall_s"] / figures["wall_s"]
            figures["generation_ratio_to_before"] = report["before"]["generation_s"] / figures["generation_s"]
        tokenizer = load_tokenizer(torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["model"])
        report["now"]["identity_vs_before"] = divergence(tokenizer, runs["now"][0]["rows"], runs["before"][0]["rows"])
    for name, figures in report.items():
        extra = (f"; vs before: wall {figures['wall_ratio_to_before']:.2f}x, generation "
                 f"{figures['generation_ratio_to_before']:.2f}x") if "wall_ratio_to_before" in figures else ""
        print(f"{name:7s} wall {figures['wall_s']:6.1f} s ({figures['tok_s_wall']:.1f} tok/s), generation "
              f"{figures['generation_s']:.1f} s ({figures['tok_s_generation'] or 0:.1f} tok/s){extra}")
    if "identity_vs_before" in report.get("now", {}):
        print("greedy identity vs before:", report["now"]["identity_vs_before"])
    print(json.dumps({"bench": "cpu_eval", "benchmarks": args.benchmarks.split(","), "limit": args.limit,
                      "max_new_tokens": args.max_new_tokens, "threads": args.threads, "results": report}))


if __name__ == "__main__":
    main()
