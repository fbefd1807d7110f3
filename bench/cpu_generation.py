"""Generation speed on CPU, the GenerationValidation workload: the quickstart's 48 prompts (advbench, xstest and
ifeval from ../shared/data when present, plus 16 held-out instructions), greedy, 64 new tokens, batch 16, on the
training-path model (Gemma-3-270M nf4 + LoRA r16, unmerged; eager attention as in the quickstart unless
``--attn_implementation``), all in one process and interleaved per round:

- ``engine``: ``rt_lightning.generation.generate`` as it is now (dense copies of the 4-bit layers, contiguous head).
- ``engine_4bit``: the same with ``dequantize_4bit=False`` (bitsandbytes dequantises in every forward).
- ``before``: the engine from ``--before DIR/rt_lightning/generation.py`` (e.g. the commit before this work).
- ``hf``: HF ``generate`` on the same length-sorted batches and stop rules (no early exit).
- ``llama_cpp``, ``llama_cpp_x16``: llama.cpp, the peer a CPU user would otherwise pick, on the same GGUF and prompts,
  greedy, one prompt at a time and ``--batch_size`` at once (``bench/llama_cpp_peer.mjs`` through node-llama-cpp,
  whose npm package ships prebuilt CPU binaries; ``npm install --prefix /tmp/nlc node-llama-cpp``); skipped with a
  note when not installed.

Prints tokens/s per variant (medians over rounds), ratios, greedy identity against ``before`` (or ``engine_4bit``),
and the bound this CPU sets for the model from measured bf16 matmul GFLOP/s and memory bandwidth; ends with one JSON
line. No timed asserts: it reports.

    python bench/cpu_generation.py --rounds 2 --before /work/before --threads 1   # on a shared machine
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from rt_lightning.callbacks import GenerationValidation
from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.generation import GenerationConfig, encode_prompts, generate
from rt_lightning.host_memory import reuse_freed_memory
from rt_lightning.hub import EMBEDDED_GEMMA, unwrap_peft
from rt_lightning.model.module import ResponseTuningModule
from rt_lightning.model.packed_linear import packing_available

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def callback_prompts(tokenizer_name: str, data_root: Path) -> tuple[list[str], object]:
    """The prompts GenerationValidation generates for in configs/quickstart.yaml, in its order."""
    data = SFTDataModule(mode="rt", max_length=512, batch_size=4, tokenizer=tokenizer_name)
    callback = GenerationValidation(benchmarks={"advbench": 8, "xstest": 8, "ifeval": 8}, heldout=16,
                                    data_root=str(data_root))
    callback.setup(SimpleNamespace(datamodule=data), None, "fit")
    template = data.build_template()
    return [template.prompt(row[-1].instruction) for row in callback._rows], data.hf_tokenizer


def hf_generate(model, tokenizer, prompts: list[str], config: GenerationConfig) -> list[list[int]]:
    """HF ``generate`` on the engine's batches (length-sorted, left-padded); new token ids per prompt."""
    encoded = encode_prompts(tokenizer, prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[list[int]] = [[] for _ in prompts]
    eos = tokenizer.eos_token_id
    for start in range(0, len(order), config.batch_size):
        chunk = order[start:start + config.batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(encoded[i])) + encoded[i] for i in chunk])
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in chunk])
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=eos)
        for i, row in zip(chunk, gen[:, width:].tolist()):
            out[i] = row[:next((k for k, t in enumerate(row) if t in (eos, tokenizer.pad_token_id)), len(row))]
    return out


def llama_cpp_generate(node_modules: str, gguf: str, prompts: list[str], max_new_tokens: int, threads: int,
                       parallel: int) -> dict:
    """llama.cpp through node-llama-cpp (prebuilt CPU binaries from npm), ``parallel`` prompts decoding at once."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(prompts, file)
        file.flush()
        out = subprocess.run(["node", str(Path(__file__).with_name("llama_cpp_peer.mjs")), gguf, file.name,
                              str(max_new_tokens), str(threads), str(parallel)],
                             env={**os.environ, "NODE_PATH": node_modules}, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"llama.cpp peer failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def hardware_bound(model, batch: int, threads: int) -> dict:
    """Decode tokens/s this CPU allows: compute-bound (2 FLOP per weight per token at the measured bf16 matmul rate
    for the model's shapes) and bandwidth-bound (every weight read once per step of ``batch`` rows)."""
    base = unwrap_peft(model)
    head = base.get_output_embeddings().weight
    layer_params = sum(p.numel() for n, p in base.named_parameters() if ".layers." in n)
    # 4-bit layers hold packed bytes; count their real element count
    layer_params = sum(m.in_features * m.out_features for n, m in base.named_modules()
                       if isinstance(m, torch.nn.Linear) and ".layers." in n) or layer_params
    per_token_flop = 2 * (layer_params + head.numel())

    def rate(m: int, k: int, n: int) -> float:
        """The best bf16 rate on this shape: plain ``linear``, or the packed weight generation uses."""
        a, b = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(n, k, dtype=torch.bfloat16)
        products = [lambda: torch.nn.functional.linear(a, b)]
        if packing_available():
            packed = torch.ops.mkldnn._reorder_linear_weight(b, m)
            products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""))
        times = []
        for product in products:
            product()
            for _ in range(3):
                start = time.perf_counter()
                product()
                times.append(time.perf_counter() - start)
        return 2 * m * k * n / min(times)

    hidden = head.shape[1]
    head_rate = rate(batch, hidden, head.shape[0])
    layer_rate = rate(batch, hidden, 4 * hidden)
    big_rate = rate(1024, 1024, 1024)
    x = torch.empty(256 * 2**20 // 4)
    x.sum()
    start = time.perf_counter()
    for _ in range(3):
        x.sum()
    bandwidth = 3 * x.numel() * 4 / (time.perf_counter() - start)
    seconds_per_step = 2 * layer_params * batch / layer_rate + 2 * head.numel() * batch / head_rate
    weight_bytes = 2 * (layer_params + head.numel())
    return {"threads": threads, "batch": batch, "gflops_bf16_1024cube": big_rate / 1e9,
            "gflops_bf16_head_shape": head_rate / 1e9, "gflops_bf16_layer_shape": layer_rate / 1e9,
            "read_bandwidth_gb_s": bandwidth / 1e9, "per_token_gflop": per_token_flop / 1e9,
            "compute_bound_tok_s": batch / seconds_per_step, "peak_compute_bound_tok_s": big_rate / per_token_flop,
            "bandwidth_bound_tok_s": batch * bandwidth / weight_bytes}


def load_before(checkout: Path):
    """``checkout``'s generation engine, importing ``checkout``'s attention switch (the live one would speed it up)."""
    def load(name: str, relative: str):
        spec = importlib.util.spec_from_file_location(name, checkout / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    live = sys.modules["rt_lightning.model.attention"]
    try:
        sys.modules["rt_lightning.model.attention"] = load("before_attention", "rt_lightning/model/attention.py")
        return load("before_generation", "rt_lightning/generation.py")
    finally:
        sys.modules["rt_lightning.model.attention"] = live


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--variants", default="engine,engine_4bit,hf")
    parser.add_argument("--before", help="checkout whose rt_lightning/generation.py is the 'before' variant")
    parser.add_argument("--limit", type=int, help="first N prompts only (e.g. 16 with 256 tokens: the eval workload)")
    parser.add_argument("--data_root", default=str(SHARED))
    parser.add_argument("--attn_implementation", default="eager",
                        help="the model's attention kernel (eager: configs/quickstart.yaml's, so the callback's)")
    parser.add_argument("--llama_cpp", default="/tmp/nlc",
                        help="npm prefix holding node-llama-cpp (npm install --prefix DIR node-llama-cpp); "
                             "the llama.cpp peer is skipped with a note when it is not there")
    parser.add_argument("--gguf", default=str(Path.home() / ".cache/rt_lightning/gemma-3-270m-q4_k_m.gguf"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as python -m rt_lightning does

    module = ResponseTuningModule(model=EMBEDDED_GEMMA, quantize="nf4", lora_r=16, lora_alpha=16,
                                  gradient_checkpointing=False, dense_cpu_base=False,
                                  attn_implementation=args.attn_implementation)
    module.configure_model()
    model = module.model
    prompts, tokenizer = callback_prompts(EMBEDDED_GEMMA, Path(args.data_root))
    prompts = prompts[: args.limit]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    print(f"{len(prompts)} prompts, {args.max_new_tokens} new tokens, batch {args.batch_size}, {args.threads} threads, "
          f"{args.attn_implementation} attention")

    before = load_before(Path(args.before)) if args.before else None

    def ids(texts_or_generations) -> list[list[int]]:
        return [tokenizer(g.text if hasattr(g, "text") else g, add_special_tokens=False)["input_ids"]
                for g in texts_or_generations]

    runners = {
        "engine": lambda: generate(model, tokenizer, prompts, config),
        "engine_4bit": lambda: generate(model, tokenizer, prompts,
                                        GenerationConfig(**{**vars(config), "dequantize_4bit": False})),
        "hf": lambda: hf_generate(model, tokenizer, prompts, config),
    }
    if before is not None:
        fields = {k: v for k, v in vars(config).items() if k in before.GenerationConfig.__dataclass_fields__}
        runners["before"] = lambda: before.generate(model, tokenizer, prompts, before.GenerationConfig(**fields))
    variants = [v for v in args.variants.split(",") if v in runners] + (["before"] if before is not None else [])
    generate(model, tokenizer, prompts[:2], GenerationConfig(max_new_tokens=2))  # warm-up
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    tokens: dict[str, list[list[int]]] = {}
    for round_ in range(args.rounds):
        for variant in variants[round_ % len(variants):] + variants[:round_ % len(variants)]:
            start = time.perf_counter()
            out = runners[variant]()
            seconds[variant].append(time.perf_counter() - start)
            tokens[variant] = out if variant == "hf" else ids(out)
            new = sum(map(len, tokens[variant])) if variant == "hf" else sum(g.num_tokens for g in out)
            tokens[variant + "_count"] = new
            print(f"round {round_} {variant:12s} {new} tokens in {seconds[variant][-1]:6.1f} s = "
                  f"{new / seconds[variant][-1]:6.1f} tok/s", flush=True)

    results = {v: {"tok_s": tokens[v + "_count"] / statistics.median(seconds[v]),
                   "seconds_median": statistics.median(seconds[v]), "new_tokens": tokens[v + "_count"]}
               for v in variants}
    node_modules = Path(args.llama_cpp) / "node_modules"
    if (node_modules / "node-llama-cpp").is_dir() and shutil.which("node"):
        for parallel in sorted({1, args.batch_size}):
            peer = llama_cpp_generate(str(node_modules), args.gguf, prompts, args.max_new_tokens, args.threads,
                                      parallel)
            name = "llama_cpp" if parallel == 1 else f"llama_cpp_x{parallel}"
            results[name] = {"tok_s": peer["tok_s"], "seconds_median": peer["seconds"], "new_tokens": peer["tokens"],
                             "note": f"llama.cpp (node-llama-cpp), Q4_K_M GGUF, greedy, {parallel} prompt(s) at once, "
                                     "no stop rules, one run"}
            print(f"{name:12s} {peer['tokens']} tokens in {peer['seconds']:6.1f} s = {peer['tok_s']:6.1f} tok/s")
    else:
        results["llama_cpp"] = {"skipped": f"node-llama-cpp not found under {node_modules} "
                                           f"(npm install --prefix {args.llama_cpp} node-llama-cpp)"}
    reference = "before" if "before" in results else "engine_4bit"
    for variant, result in results.items():
        if "tok_s" in result and reference in results:
            result["ratio_to_" + reference] = result["tok_s"] / results[reference]["tok_s"]
        if "tok_s" in result and "hf" in results:
            result["ratio_to_hf"] = result["tok_s"] / results["hf"]["tok_s"]
    identity = {}
    for variant in variants:
        if variant != reference and reference in tokens and variant in tokens:
            diffs = [first_difference(a, b) for a, b in zip(tokens[variant], tokens[reference])]
            identity[variant] = {"rows_diverging": sum(d is not None for d in diffs),
                                 "first_divergence_tokens": sorted(d for d in diffs if d is not None)}
    bound = hardware_bound(model, args.batch_size, args.threads)
    for variant, result in results.items():
        if "tok_s" in result:
            print(f"{variant:12s} {result['tok_s']:7.1f} tok/s  " + "  ".join(
                f"{k} {v:.2f}" for k, v in result.items() if k.startswith("ratio")))
    print(f"greedy identity vs {reference}: {identity}")
    print(f"bound at batch {args.batch_size}: compute {bound['compute_bound_tok_s']:.0f} tok/s "
          f"(bf16 {bound['gflops_bf16_head_shape']:.0f} GFLOP/s on the head's shape, "
          f"{bound['per_token_gflop']:.2f} GFLOP/token), bandwidth {bound['bandwidth_bound_tok_s']:.0f} tok/s "
          f"({bound['read_bandwidth_gb_s']:.0f} GB/s); engine reaches "
          f"{results['engine']['tok_s'] / bound['compute_bound_tok_s']:.0%} of the compute bound" if "engine" in results
          else "")
    print(json.dumps({"bench": "cpu_generation", "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
                      "attn_implementation": args.attn_implementation,
                      "batch_size": args.batch_size, "results": results, "greedy_identity_vs": reference,
                      "identity": identity, "bound": bound}))


if __name__ == "__main__":
    main()
