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
    training = {k: r for k, r in parts["training"].items() if isinstance(r, dict)}
    assert {"bf16_lora"} <= set(training) and all(r["tokens_per_s"] > 0 for r in training.values()), training
    if report["bitsandbytes"]:  # the QLoRA variants, each in its own process (its own memory figure)
        assert {"rt_qlora", "hf_peft_qlora"} <= set(training)
    assert report["carry"]["tree_bytes"] > 0 and report["carry"]["limit_bytes"] == 64 * 2**20
    assert parts["generation"]["engine_tokens"] > 0 and parts["generation"]["hf_tokens"] > 0


@pytest.mark.slow
def test_gpu_suite_dry_run_fsdp_steps(tmp_path):
    fsdp = dry_run(tmp_path, "fsdp")["parts"]["fsdp"]
    one, two = fsdp["one_gpu"], fsdp["two_cpu_processes"]
    assert one["fsdp2"]["ok"] and "skipped" in one["fsdp"], one  # FSDP1 one-rank CPU: see gpu_suite_fsdp.py
    assert all(run["ok"] and run["gen_keys"] for run in two.values()), two
    for name in ("fsdp", "fsdp2"):
        assert two[name]["max_loss_difference_vs_single"] < 1e-5, two[name]
        assert any("2 process(es)" in line for line in two[name]["set_up_lines"]), two[name]
