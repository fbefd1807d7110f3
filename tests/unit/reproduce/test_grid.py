"""The grid's plan: arms, per-arm fit configs and eval commands, and the cost estimate."""

import json

import pytest

from rt_lightning.eval.benchmarks import BENCHMARKS
from rt_lightning.eval.options import BenchmarkSource
from rt_lightning.reproduce.pipeline import eval_command, fit_config
from rt_lightning.reproduce.preset import Arm, EvalSettings, Preset, build_arms, estimate_seconds, select_arms
from rt_lightning.reproduce.run import plan


def preset(**kwargs) -> Preset:
    fit = {"trainer": {"max_epochs": 2, "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                                        "init_args": {"dirpath": "elsewhere"}}]},
           "data": {"class_path": "rt_lightning.data.SFTDataModule", "init_args": {"train": "t.jsonl"}}}
    return Preset(name="p", model="m", fit=fit, refusals_source="r.json", output_root="out",
                  eval=EvalSettings(benchmarks={"advbench": 10, "xstest": None, "ifeval": 10}), **kwargs)


@pytest.fixture
def advbench_and_xstest(tmp_path):
    advbench = tmp_path / "harmful_behaviors.csv"
    advbench.write_text("goal,target\n" + "".join(f"Do harmful thing {i},Sure\n" for i in range(10)))
    xstest = tmp_path / "xs.csv"
    xstest.write_text("id,prompt,type,label\n" + "".join(f"{i},p{i},t,{'safe' if i % 2 else 'unsafe'}\n" for i in range(20)))
    return {"advbench": str(advbench), "xstest": str(xstest)}


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


def test_eval_runs_once_per_arm_each_benchmark_at_its_limit_with_the_arms_model_and_prompt():
    untuned = eval_command(preset(icl_prompt="u.txt"), Arm("untuned-urial_r", prompt="urial_r"), None)
    assert untuned[untuned.index("--model.base") + 1] == "m" and untuned[untuned.index("--prompt.icl") + 1] == "urial_r"
    assert json.loads(untuned[untuned.index("--benchmarks") + 1]) == ["advbench", "xstest", "ifeval"]
    assert json.loads(untuned[untuned.index("--data.limits") + 1]) == {"advbench": 10, "ifeval": 10}  # xstest: all
    assert "--data.limit" not in untuned
    trained = eval_command(preset(), Arm("rt", mode="rt"), "ckpt")
    assert trained[trained.index("--model.ckpt_path") + 1] == "ckpt" and "--prompt.icl" not in trained


def test_eval_applies_each_benchmarks_own_limit(advbench_and_xstest):
    data = BenchmarkSource(paths=advbench_and_xstest, limit=2, limits={"xstest": 3})
    assert data.limit_of("advbench") == 2 and data.limit_of("xstest") == 3
    rows = {name: BENCHMARKS[name].rows(path, None, data.limit_of(name)) for name, path in advbench_and_xstest.items()}
    assert len(rows["advbench"]) == 2 and len(rows["xstest"]) == 6  # 3 per subset


def test_the_plan_prints_every_arm_and_a_budget(tmp_path):
    p = preset()
    p.output_root = str(tmp_path)
    arms = build_arms(p)
    text = plan(p, arms)
    assert all(a.name in text for a in arms) and "Estimated wall time still to run" in text
    assert estimate_seconds(p, Arm("rt-refusals500", "rt", 500))["train"] > estimate_seconds(p, Arm("rt", "rt"))["train"]
    assert estimate_seconds(p, Arm("untuned-tulu"))["train"] == 0
