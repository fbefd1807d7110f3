"""The tiny reproduction preset end to end: report structure, reruns skip finished arms, and a run killed in the
middle of an arm, then rerun, gives the same results.json as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rt_lightning.testing import write_tiny_reproduction_inputs

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "configs" / "reproduce" / "tiny.yaml"
ARMS = ["untuned-tulu", "rt", "rt-refusals4"]


def command(output_root: str) -> list[str]:
    return [sys.executable, "-m", "rt_lightning", "reproduce", "--config", str(PRESET), "--output_root", output_root]


def run(cwd: Path, output_root: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command(output_root), cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_tiny_grid_reports_resumes_and_survives_a_kill(tmp_path):
    write_tiny_reproduction_inputs(tmp_path / "tiny-inputs")
    first = run(tmp_path, "straight")
    root = tmp_path / "straight" / "tiny"
    assert "Estimated wall time still to run" in first.stdout
    for name in ("results.json", "report.md", "timings.json", "helpfulness.png", "refusal_vs_n.png",
                 "in_context.png", "training_curves.png"):
        assert (root / name).is_file(), name
    results = json.loads((root / "results.json").read_text())
    assert list(results["arms"]) == ARMS
    assert {"rr_avg", "frr_xstest_safe", "response_ranking", "reference_nll", "stop_rate"} <= set(
        results["arms"]["rt"]["metrics"])
    assert [v["claim"] for v in results["verdicts"]][1].startswith("RT learns to refuse")
    assert all(v["verdict"] in ("reproduced", "not reproduced", "inconclusive at this scale")
               for v in results["verdicts"])
    assert results["arms"]["rt"]["curve"]["val_epoch"] and results["safety"]["rt"].keys() == {"0", "4"}
    report = (root / "report.md").read_text()
    assert "## Verdicts" in report and "(b) Safety" in report and "Table 15" in report

    # A rerun skips every finished arm and writes the same results.
    again = run(tmp_path, "straight")
    assert (again.stdout + again.stderr).count("done earlier, skipped") == len(ARMS)
    assert json.loads((root / "results.json").read_text()) == results

    # Killed in the middle of an arm's training, then rerun: the same results as the uninterrupted run.
    killed_root = tmp_path / "killed" / "tiny"
    process = subprocess.Popen(command("killed"), cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not list((killed_root / "rt" / "fit" / "checkpoints").glob("epoch=0*.ckpt")):
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed_root / "rt" / "fit.done").exists()
    run(tmp_path, "killed")
    assert json.loads((killed_root / "results.json").read_text()) == results
