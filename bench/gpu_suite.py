"""One prepared GPU suite (one call of at most 10 minutes on an H100/H200, no network); writes one JSON file.

Parts (each is timed, and a part that fails records its error in the JSON and the suite goes on):
1. ``agreement``: greedy tokens, GPU vs CPU, our engine and plain HF ``generate``, nf4 and bf16, on 32 Gemma-3-270M
   prompts (``--gemma PATH``: a local HF folder or the GGUF file; skipped with a note when absent). Also flags
   degenerate text (a row that repeats one token), once seen with 4-bit Gemma and HF ``generate`` on an H100.
2. ``training``: QLoRA tokens/s and peak memory on a Llama-3.2-1B-shaped *random* model, micro-batch 8x1024, LoRA r64
   all-linear: rt_lightning's module vs plain HF+PEFT, and bf16 LoRA; each variant in its own process
   (bench/gpu_suite_training.py), so each memory figure is its own.
3. ``generation``: tokens/s at batch 64, 256 new tokens, our engine vs HF ``generate``, same random model (bf16).
4. ``fsdp``: the recipe composed with configs/strategies/fsdp.yaml and fsdp2.yaml, ``fit`` on one GPU, and the same
   flags on 2 CPU processes beside it compared with one process (bench/gpu_suite_fsdp.py).

    python bench/gpu_suite.py --output gpu_suite.json [--gemma /tmp/gemma-3-270m.gguf]
    python bench/gpu_suite.py --dry-run --output /tmp/dry.json     # CPU, tiny shapes (tested in CI)

What must travel. The GPU image (Python 3.12, torch 2.11+cu130, transformers 5.17, peft, lightning 2.6.6) lacks
these cp312 wheels, which go in .whl/ (listed in .git/info/exclude, named in ``carry``):
    bitsandbytes-0.50.2 (43.1 MB; 7.1 MB after ``zip -d bitsandbytes-*.whl '*cuda11*' '*cuda12*' '*rocm*' '*xpu*'``),
    pyarrow-26.0.1 (55.0 MB), datasets-5.2.0 (0.6), typeshed_client-2.15.0 (0.8), xxhash-4.1.0 (0.5),
    jsonargparse-4.53.0 (0.2), multiprocess-0.70.19 (0.2), dill-0.4.1 (0.1), docstring_parser-0.18.0 (0.02);
    gguf-0.19.0 (0.1) only for ``--gemma`` with a GGUF file.
About 64.7 MB with the shrunk bitsandbytes, plus the working tree (about 1.3 MB): just under the 64 MiB (67.1 MB) a
call carries; the suite prints the total it finds (``carry``) and refuses to start a GPU run over the limit. Fetch
them on a machine with network:
    pip download --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \\
        --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform any --no-deps -d .whl bitsandbytes==0.50.2 datasets \\
        jsonargparse docstring-parser typeshed-client gguf dill multiprocess xxhash pyarrow
Then, as the call (carry ``.whl``):
    pip install --no-index --no-deps .whl/*.whl && pip install --no-deps -e . && \\
        python bench/gpu_suite.py --output $OUT/gpu_suite.json
The real Gemma GGUF (253 MB) cannot travel in one call: five ~50 MB parts, one per call while the machine is warm,
each copied to /tmp, then ``cat`` and ``--gemma /tmp/gemma-3-270m.gguf``; without it part 1 is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from rt_lightning.generation import GenerationConfig, encode_prompts, generate
from rt_lightning.hub import load_causal_lm, load_tokenizer
from rt_lightning.testing import save_tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
# hidden, intermediate, layers, heads, kv heads, vocab (Llama-3.2-1B; dry run: tiny)
LLAMA_1B = (2048, 8192, 16, 32, 8, 128256)
TINY = (64, 128, 2, 4, 2, 400)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


CARRY_LIMIT = 64 * 2**20


def carry() -> dict:
    """What a device call would carry: the working tree (tracked and untracked-not-ignored) plus .whl/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True).stdout.split("\0")
    tree = sum((ROOT / f).stat().st_size for f in listed if f and (ROOT / f).is_file())
    wheels = {w.name: w.stat().st_size for w in sorted((ROOT / ".whl").glob("*.whl"))}
    total = tree + sum(wheels.values())
    return {"tree_bytes": tree, "wheels": wheels, "total_bytes": total, "limit_bytes": CARRY_LIMIT,
            "fits": total <= CARRY_LIMIT}


def random_llama(folder: str, shape: tuple) -> str:
    """A Llama of ``shape`` with random bf16 weights and rt_lightning's tiny tokenizer (its ids fit any vocab)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv, vocab = shape
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=True,
                         max_position_embeddings=4096)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401  (optional dependency: only the 4-bit parts need it)
    except ImportError:
        return False
    return True


def left_padded(tokenizer, prompts: list[str], device: str) -> dict:
    """The engine's tokens (its BOS rule), left-padded for HF ``generate``."""
    rows = encode_prompts(tokenizer, prompts)
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


# --- 1. agreement -----------------------------------------------------------------------------------------------
def agreement(args, device: str) -> dict:
    if args.dry_run:
        model_path = save_tiny_model(tempfile.mkdtemp(prefix="gpu-suite-"))
        prompts = [f"<|user|>\nQuestion {i}: what is {i} plus {i}?\n<|assistant|>\n" for i in range(4)]
        new_tokens = 8
    elif args.gemma and Path(args.gemma).exists():
        model_path, new_tokens = args.gemma, 64
        prompts = [f"<|user|>\n{q}\n<|assistant|>\n" for q in QUESTIONS]
    else:
        return {"skipped": "no --gemma PATH given (the 253 MB Gemma GGUF cannot travel in one call)"}
    tokenizer = load_tokenizer(model_path)
    config = GenerationConfig(max_new_tokens=new_tokens, batch_size=16)
    out = {}
    for quantize in [None] + (["nf4"] if has_bitsandbytes() else []):
        rows = {}
        for where in ("cpu", device):
            model = load_causal_lm(model_path, quantize=quantize, device_map={"": where} if quantize else None)
            model = model if quantize else model.to(where)
            rows[f"engine_{where}"] = [tokenizer(g.text, add_special_tokens=False)["input_ids"]
                                       for g in generate(model, tokenizer, prompts, config)]
            encoded = left_padded(tokenizer, prompts, where)
            with torch.inference_mode():
                hf = model.generate(**encoded, do_sample=False, max_new_tokens=new_tokens,
                                    pad_token_id=tokenizer.pad_token_id)
            rows[f"hf_{where}"] = [[t for t in row if t != tokenizer.pad_token_id] for row in
                                   hf[:, encoded["input_ids"].shape[1]:].tolist()]
            del model
        reference = rows["engine_cpu"]
        summary = {}
        for name, got in rows.items():
            firsts = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), None) for x, y in zip(got, reference)]
            summary[name] = {"rows_identical_prefix": sum(f is None for f in firsts), "rows": len(got),
                             "first_divergence": sorted(f for f in firsts if f is not None),
                             "degenerate_rows": sum(len(r) >= 8 and len(set(r[-8:])) == 1 for r in got)}
        out[quantize or "bf16"] = summary
    return out


QUESTIONS = ["What is the capital of France?", "Name three primary colours.", "How do I boil an egg?",
             "Write a haiku about autumn.", "What is 17 times 23?", "Explain photosynthesis in one sentence.",
             "Give me a synonym for happy.", "Who wrote Hamlet?", "What is the boiling point of water in Kelvin?",
             "Translate 'good morning' into Spanish.", "List the planets of the solar system.",
             "Why is the sky blue?", "Suggest a name for a pet turtle.", "What does DNA stand for?",
             "How many days are in a leap year?", "Describe a cat in five words.", "What is the square root of 144?",
             "Write a short apology for being late.", "What is the largest ocean?", "Give two tips for better sleep.",
             "What language is spoken in Brazil?", "Summarise the plot of Cinderella.", "What is an adjective?",
             "Convert 5 kilometres to miles.", "Who painted the Mona Lisa?", "Name a prime number above 50.",
             "What causes rain?", "Write a rhyme with 'cat'.", "What is the freezing point of water in Fahrenheit?",
             "Explain what a noun is.", "How many legs does a spider have?", "Recommend a book for a child."]


# --- 2. training --------------------------------------------------------------------------------------------------
def training(args, device: str, model_path: str) -> dict:
    vocab = TINY[-1] if args.dry_run else LLAMA_1B[-1]
    out = {}
    for variant in ["rt_qlora", "hf_peft_qlora", "bf16_lora"] if has_bitsandbytes() else ["bf16_lora"]:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite_training.py"), "--variant", variant,
                               "--model", model_path, "--device", device, "--vocab", str(vocab),
                               *(["--dry-run"] if args.dry_run else [])], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        out[variant] = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                        else {"error": done.stderr[-2000:]})
    return out


# --- 3. generation ------------------------------------------------------------------------------------------------
def generation(args, device: str, model_path: str) -> dict:
    batch, new_tokens = (4, 8) if args.dry_run else (64, 256)
    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path).to(device)
    prompts = [f"<|user|>\nPrompt number {i}, tell me about {i}.\n<|assistant|>\n" for i in range(batch)]
    config = GenerationConfig(max_new_tokens=new_tokens, batch_size=batch)
    generate(model, tokenizer, prompts[:2], GenerationConfig(max_new_tokens=2))
    sync(device)
    start = time.perf_counter()
    ours = generate(model, tokenizer, prompts, config)
    sync(device)
    engine_s = time.perf_counter() - start
    encoded = left_padded(tokenizer, prompts, device)
    start = time.perf_counter()
    with torch.inference_mode():
        hf = model.generate(**encoded, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            pad_token_id=tokenizer.pad_token_id)
    sync(device)
    hf_s = time.perf_counter() - start
    engine_tokens = sum(g.num_tokens for g in ours)
    hf_tokens = (hf.shape[1] - encoded["input_ids"].shape[1]) * batch
    return {"batch": batch, "max_new_tokens": new_tokens, "engine_tok_s": engine_tokens / engine_s,
            "hf_tok_s": hf_tokens / hf_s, "engine_tokens": engine_tokens, "hf_tokens": hf_tokens}


# --- 4. fsdp ------------------------------------------------------------------------------------------------------
def fsdp(args, device: str, model_path: str) -> dict:
    from gpu_suite_fsdp import one_gpu, two_cpu_processes  # beside this script (sys.path[0])

    tiny = model_path if args.dry_run else random_llama(tempfile.mkdtemp(prefix="gpu-suite-tiny-"), TINY)
    return {"one_gpu": one_gpu(tiny, args.dry_run), "two_cpu_processes": two_cpu_processes(tiny)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="gpu_suite.json")
    parser.add_argument("--gemma", help="Gemma-3-270M: local HF folder or GGUF file (part 1 is skipped without it)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, seconds: checks the suite runs")
    parser.add_argument("--parts", default="agreement,training,generation,fsdp")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_suite: no CUDA device; use --dry-run to check the suite on a CPU")
    carried = carry()
    print(f"carry: {carried['total_bytes'] / 2**20:.1f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB "
          f"({len(carried['wheels'])} wheels in .whl/)", flush=True)
    if not args.dry_run and not carried["fits"]:
        raise SystemExit("gpu_suite: the working tree and .whl/ exceed what one call carries; see the header")
    report = {"suite": "gpu_suite", "dry_run": args.dry_run, "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "bitsandbytes": has_bitsandbytes(), "carry": carried, "parts": {}}
    folder = tempfile.mkdtemp(prefix="gpu-suite-model-")
    model_path = random_llama(folder, TINY if args.dry_run else LLAMA_1B)
    parts = {"agreement": lambda: agreement(args, device), "training": lambda: training(args, device, model_path),
             "generation": lambda: generation(args, device, model_path), "fsdp": lambda: fsdp(args, device, model_path)}
    for name in args.parts.split(","):
        start = time.perf_counter()
        try:
            result = parts[name]()
        except Exception as error:  # recorded in the report (one failing part must not cost the others' figures)
            result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.perf_counter() - start, 1)
        report["parts"][name] = result
        print(f"{name}: {json.dumps(result)[:600]}", flush=True)
    Path(args.output).write_text(json.dumps(report, indent=1))
    print(json.dumps({"output": args.output, "errors": [n for n, r in report["parts"].items() if "error" in r]}))


if __name__ == "__main__":
    main()
