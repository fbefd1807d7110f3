"""Run one arm: ``fit`` (trained arms), then ``eval``, each as the project's own command in a child process.

Reusing the commands keeps one trainer and one evaluator, and a child process per step means a kill anywhere loses at
most the step in flight. Every step is resumable on its own: ``fit`` continues from the newest readable checkpoint
(``--ckpt_path last``), ``eval`` skips rows already written, and a step that finished leaves a marker
(``fit.done``, ``eval.done``) so a rerun skips it entirely. Wall time is added up across runs in ``timings.json``.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import yaml

from rt_lightning.io import atomic_write_json, atomic_write_text
from rt_lightning.reproduce.preset import Arm, Preset

log = logging.getLogger(__name__)


def run_root(preset: Preset) -> Path:
    return Path(preset.output_root) / preset.name


def arm_dir(preset: Preset, arm: Arm) -> Path:
    return run_root(preset) / arm.name


def fit_config(preset: Preset, arm: Arm) -> dict:
    """The preset's ``fit`` config with this arm's mode, refusal mixture and run folders filled in."""
    folder = arm_dir(preset, arm) / "fit"
    config = copy.deepcopy(preset.fit)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(folder)
    trainer["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                         "init_args": {"save_dir": str(folder), "name": "logs"}}
    callbacks = [c for c in trainer.get("callbacks") or [] if not str(c.get("class_path", "")).endswith("ModelCheckpoint")]
    # One checkpoint per epoch in a fixed folder: a rerun resumes from the last finished epoch.
    callbacks.append({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                      "init_args": {"dirpath": str(folder / "checkpoints"), "save_last": True, "save_top_k": -1,
                                    "every_n_epochs": 1}})
    trainer["callbacks"] = callbacks
    config.setdefault("model", {})["model"] = preset.model
    data = config.setdefault("data", {}).setdefault("init_args", {})
    data["mode"] = arm.mode
    if arm.refusals:
        if not preset.refusals_source:
            raise ValueError(f"arm {arm.name} needs refusals_source in preset {preset.name!r}")
        data["refusals"] = {"source": preset.refusals_source, "count": arm.refusals}
    return config


def eval_model_args(preset: Preset, arm: Arm, checkpoint: Optional[str]) -> list[str]:
    if arm.trained:
        return ["--model.ckpt_path", str(checkpoint)]
    args = ["--model.base", preset.model]
    if arm.prompt != "tulu":
        args += ["--prompt.icl", arm.prompt] + (["--prompt.icl_prompt", preset.icl_prompt] if preset.icl_prompt else [])
    return args


def eval_command(preset: Preset, arm: Arm, checkpoint: Optional[str]) -> list[str]:
    """The arm's one ``eval`` call: every benchmark at its own limit, so their generations share batches and the
    model loads once."""
    settings = preset.eval
    limits = {name: limit for name, limit in settings.benchmarks.items() if limit is not None}
    args = [sys.executable, "-m", "rt_lightning", "eval", *eval_model_args(preset, arm, checkpoint),
            "--benchmarks", json.dumps(list(settings.benchmarks)), "--output_dir", str(arm_dir(preset, arm) / "eval"),
            "--generation.max_new_tokens", str(settings.max_new_tokens),
            "--generation.batch_size", str(settings.batch_size)]
    if limits:
        args += ["--data.limits", json.dumps(limits)]
    if settings.data_root:
        args += ["--data.root", settings.data_root]
    if settings.paths:
        args += ["--data.paths", json.dumps(settings.paths)]
    return args + list(settings.extra_args)


def _run(args: list[str], log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise RuntimeError(f"step failed (exit {done.returncode}); see {log_file}:\n" + "\n".join(tail))


def _add_time(folder: Path, step: str, seconds: float) -> None:
    path = folder / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[step] = timings.get(step, 0.0) + seconds
    atomic_write_json(path, timings)


def run_fit(preset: Preset, arm: Arm) -> str:
    """Train the arm (or finish training it); returns the final checkpoint."""
    folder = arm_dir(preset, arm)
    marker = folder / "fit.done"
    if marker.is_file():
        return json.loads(marker.read_text())["checkpoint"]
    config_path = folder / "fit.yaml"
    atomic_write_text(config_path, yaml.safe_dump(fit_config(preset, arm), sort_keys=False))
    start = time.perf_counter()
    try:
        configs = [arg for path in preset.fit_configs for arg in ("--config", path)]
        _run([sys.executable, "-m", "rt_lightning", "fit", *configs, "--config", str(config_path), "--ckpt_path", "last"],
             folder / "fit.log")
    finally:
        _add_time(folder, "fit", time.perf_counter() - start)
    checkpoint = folder / "fit" / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        raise RuntimeError(f"{arm.name}: fit finished without {checkpoint}")
    atomic_write_json(marker, {"checkpoint": str(checkpoint)})
    return str(checkpoint)


def run_eval(preset: Preset, arm: Arm, checkpoint: Optional[str]) -> None:
    folder = arm_dir(preset, arm)
    marker = folder / "eval.done"
    if marker.is_file():
        return
    start = time.perf_counter()
    try:
        _run(eval_command(preset, arm, checkpoint), folder / "eval.log")
    finally:
        _add_time(folder, "eval", time.perf_counter() - start)
    atomic_write_json(marker, {"benchmarks": sorted(preset.eval.benchmarks)})


def run_arm(preset: Preset, arm: Arm) -> None:
    folder = arm_dir(preset, arm)
    if (folder / "eval.done").is_file() and (not arm.trained or (folder / "fit.done").is_file()):
        log.info("%s: done earlier, skipped", arm.name)
        return
    log.info("%s: %s", arm.name, "fit, then eval" if arm.trained else "eval of the untuned base")
    checkpoint = run_fit(preset, arm) if arm.trained else None
    run_eval(preset, arm, checkpoint)
