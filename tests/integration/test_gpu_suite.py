"""bench/gpu_suite.py's --dry-run: the suite the GPU machine runs in one call must run end to end (CPU, tiny shapes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dry_run(tmp_path, parts: str) -> dict:
    output = tmp_path / "suite.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--dry-run", "--parts", parts,
                           "--output", str(output)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["errors"] == []
    return json.loads(output.read_text())


def test_gpu_suite_dry_run_agreement_training_generation(tmp_path):
    report = dry_run(tmp_path, "agreement,training,generation")
    parts = report["parts"]
    assert report["dry_run"] and report["device"] == "cpu"
    engine = parts["agreement"]["bf16"]["engine_cpu"]
    assert engine["rows_identical_prefix"] == engine["rows"]  # CPU against itself: the reference
    assert {"bf16_lora"} <= set(parts["training"]) and all(r["tokens_per_s"] > 0 for k, r in parts["training"].items()
                                                           if isinstance(r, dict))
    assert parts["generation"]["engine_tokens"] > 0 and parts["generation"]["hf_tokens"] > 0


@pytest.mark.slow
def test_gpu_suite_dry_run_fsdp_steps(tmp_path):
    fsdp = dry_run(tmp_path, "fsdp")["parts"]["fsdp"]
    assert fsdp["fsdp"]["ok"] and fsdp["fsdp2"]["ok"], fsdp
