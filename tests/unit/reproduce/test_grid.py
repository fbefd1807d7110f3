"""The grid's plan: arms, per-arm fit configs and eval commands, and the cost estimate."""

import pytest

from rt_lightning.reproduce.pipeline import eval_commands, fit_config
from rt_lightning.reproduce.preset import Arm, EvalSettings, Preset, build_arms, estimate_seconds, select_arms
from rt_lightning.reproduce.run import plan


def preset(**kwargs) -> Preset:
    fit = {"trainer": {"max_epochs": 2, "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                                        "init_args": {"dirpath": "elsewhere"}}]},
           "data": {"class_path": "rt_lightning.data.SFTDataModule", "init_args": {"train": "t.jsonl"}}}
    return Preset(name="p", model="m", fit=fit, refusals_source="r.json", output_root="out",
                  eval=EvalSettings(benchmarks={"advbench": 10, "xstest": None, "ifeval": 10}), **kwargs)


def test_the_paper_grid_has_every_arm_once_untuned_first():
    names = [a.name for a in build_arms(preset())]
    assert names == ["untuned-tulu", "untuned-urial", "untuned-urial_r", "it", "rt", "rt_empty",
                     "it-refusals100", "rt-refusals100", "it-refusals200", "rt-refusals200",
                     "it-refusals500", "rt-refusals500"]
    assert [a.name for a in select_arms(build_arms(preset()), ["rt", "it"])] == ["rt", "it"]
    with pytest.raises(ValueError, match="unknown arm"):
        select_arms(build_arms(preset()), ["sft"])


def test_each_arm_gets_its_mode_mixture_and_own_folders():
    config = fit_config(preset(), Arm("rt-refusals200", mode="rt", refusals=200))
    data = config["data"]["init_args"]
    assert data["mode"] == "rt" and data["refusals"] == {"source": "r.json", "count": 200}
    assert data["train"] == "t.jsonl" and config["model"]["model"] == "m"
    (checkpoint,) = config["trainer"]["callbacks"]
    assert checkpoint["init_args"]["dirpath"] == "out/p/rt-refusals200/fit/checkpoints"
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == "out/p/rt-refusals200/fit"
    assert "refusals" not in fit_config(preset(), Arm("it", mode="it"))["data"]["init_args"]


def test_eval_runs_once_per_distinct_limit_with_the_arms_model_and_prompt():
    untuned = eval_commands(preset(icl_prompt="u.txt"), Arm("untuned-urial_r", prompt="urial_r"), None)
    assert len(untuned) == 2
    first = untuned[0]
    assert first[first.index("--model.base") + 1] == "m" and first[first.index("--prompt.icl") + 1] == "urial_r"
    assert '["advbench", "ifeval"]' in first and first[first.index("--data.limit") + 1] == "10"
    assert "--data.limit" not in untuned[1]
    trained = eval_commands(preset(), Arm("rt", mode="rt"), "ckpt")[0]
    assert trained[trained.index("--model.ckpt_path") + 1] == "ckpt" and "--prompt.icl" not in trained


def test_the_plan_prints_every_arm_and_a_budget(tmp_path):
    p = preset()
    p.output_root = str(tmp_path)
    arms = build_arms(p)
    text = plan(p, arms)
    assert all(a.name in text for a in arms) and "Estimated wall time still to run" in text
    assert estimate_seconds(p, Arm("rt-refusals500", "rt", 500))["train"] > estimate_seconds(p, Arm("rt", "rt"))["train"]
    assert estimate_seconds(p, Arm("untuned-tulu"))["train"] == 0
