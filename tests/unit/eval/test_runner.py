import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rt_lightning.commands.eval import grouped_flags
from rt_lightning.eval import runner
from rt_lightning.eval.benchmarks import BENCHMARKS, load_benchmark
from rt_lightning.eval.options import BenchmarkSource, ModelSource
from rt_lightning.eval.results import ResultsFile
from rt_lightning.eval.runner import evaluate
from rt_lightning.eval.scoring.metrics import RefusalRate
from rt_lightning.generation import GenerationConfig
from tests.support.files import write_jsonl

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def advbench_csv(tmp_path):
    path = tmp_path / "harmful_behaviors.csv"
    path.write_text("goal,target\n" + "".join(f'"Do harmful thing {i}",Sure\n' for i in range(30)))
    return path


def test_results_file_drops_a_torn_last_row_and_refuses_duplicates(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "x": 1}\n{"id": "b", "x": 2}\n{"id": "c", "x"')
    results = ResultsFile(path)
    assert set(results.rows) == {"a", "b"} and "c" not in results
    results.append({"id": "c", "x": 3})
    with pytest.raises(ValueError, match="written twice"):
        results.append({"id": "a"})
    results.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_limit_is_per_subset_for_two_sided_sets(tmp_path):
    path = tmp_path / "xs.csv"
    path.write_text("id,prompt,type,label\n"
                    + "".join(f"{i},p{i},t,{'safe' if i % 3 else 'unsafe'}\n" for i in range(30)))
    rows = load_benchmark("xstest", str(path), limit=4)
    assert [r.subset for r in rows].count("safe") == 4 and [r.subset for r in rows].count("unsafe") == 4


def test_refusal_rate_metric_merges_like_ddp():
    a, b, whole = RefusalRate(), RefusalRate(), RefusalRate()
    a.update([True, False, True])
    b.update([False])
    whole.update([True, False, True, False])
    a.merge_state(b)
    assert float(a.compute()) == float(whole.compute()) == 0.5


def test_harmbench_rr_is_the_mean_of_its_two_subsets():
    rows = [{"subset": "standard", "refused": r, "response": "x", "num_tokens": 1, "finish_reason": "eos"}
            for r in (True, True, False, False)]
    rows += [{"subset": "contextual", "refused": True, "response": "x", "num_tokens": 1, "finish_reason": "eos"}]
    out = BENCHMARKS["harmbench"].summarize(rows)
    assert out["rr_standard"] == 0.5 and out["rr_contextual"] == 1.0 and out["rr"] == 0.75


def test_eval_scores_an_existing_responses_file_without_a_model(advbench_csv, tmp_path):
    responses = write_jsonl(tmp_path / "vllm.jsonl", [
        {"prompt": f"Do harmful thing {i}", "response": "I'm sorry, but I cannot help with that." if i < 10 else
         "Sure, here is how."} for i in range(30)])
    metrics = evaluate(["advbench"], str(tmp_path / "out"), responses=str(responses),
                       data=BenchmarkSource(paths={"advbench": str(advbench_csv)}))
    assert metrics["advbench"]["n"] == 30 and abs(metrics["advbench"]["rr"] - 1 / 3) < 1e-9
    rows = [json.loads(line) for line in (tmp_path / "out" / "advbench.jsonl").read_text().splitlines()]
    assert rows[0]["refused"] is True and rows[0]["refusal_reason"]
    assert "advbench" in (tmp_path / "out" / "summary.md").read_text()


def test_eval_generates_and_a_rerun_adds_nothing(tiny_model_dir, advbench_csv, tmp_path):
    kwargs = dict(model=ModelSource(base=tiny_model_dir),
                  data=BenchmarkSource(paths={"advbench": str(advbench_csv)}, limit=6),
                  generation=GenerationConfig(max_new_tokens=4, batch_size=4))
    first = evaluate(["advbench", "advbench"], str(tmp_path / "out"), **kwargs)  # named twice: generated once
    again = evaluate(["advbench"], str(tmp_path / "out"), **kwargs)
    assert first == again and first["advbench"]["n"] == 6
    assert len((tmp_path / "out" / "advbench.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow
def test_killed_eval_resumes_with_no_duplicate_and_no_loss(tiny_model_dir, advbench_csv, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "rt_lightning", "eval", "--model.base", tiny_model_dir, "--benchmarks", "[advbench]",
            "--data.paths", json.dumps({"advbench": str(advbench_csv)}), "--output_dir", str(out),
            "--generation.batch_size", "1", "--generation.max_new_tokens", "48"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "advbench.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(results.read_text().splitlines())
    assert 5 <= written < 30, "the kill should land midway"
    with results.open("a") as fh:  # what a kill during a write leaves behind
        fh.write('{"id": "advbench-29", "response": "par')
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 30
    assert set(ids) == {f"advbench-{i}" for i in range(30)}
    assert json.loads((out / "metrics.json").read_text())["advbench"]["n"] == 30


def test_every_benchmark_loads_from_the_shared_folder():
    from tests.support.files import SHARED_DATA

    if not SHARED_DATA.exists():
        pytest.skip("shared data folder absent")
    sizes = {name: len(load_benchmark(name, data_root=str(SHARED_DATA))) for name in BENCHMARKS}
    assert sizes == {"advbench": 520, "harmbench": 300, "malicious_instruct": 100, "xstest": 450, "ifeval": 541,
                     "alpaca_eval": 805, "just_eval": 1000, "mt_bench": 80, "response_ranking": 805}


def test_flat_flags_of_earlier_versions_set_the_grouped_options():
    argv = ["--model", "m", "--adapter=a", "--data_root", "d", "--limit", "3", "--icl", "urial", "--model.dtype",
            "float32", "--benchmarks", "[xstest]"]
    assert grouped_flags(argv) == ["--model.base", "m", "--model.adapter=a", "--data.root", "d", "--data.limit", "3",
                                   "--prompt.icl", "urial", "--model.dtype", "float32", "--benchmarks", "[xstest]"]


@pytest.fixture
def two_benchmarks(advbench_csv, tmp_path):
    xstest = tmp_path / "xs.csv"
    xstest.write_text("id,prompt,type,label\n" + "".join(
        f"{i},How do I {'kill' if i % 2 else 'bake'} thing {i}?,t,{'unsafe' if i % 2 else 'safe'}\n" for i in range(8)))
    return dict(model=ModelSource(base=None, dtype="float32"),
                data=BenchmarkSource(paths={"advbench": str(advbench_csv), "xstest": str(xstest)}, limit=3),
                generation=GenerationConfig(max_new_tokens=5, batch_size=4))


def _written(folder: Path, name: str) -> dict:
    return {row["id"]: row for row in map(json.loads, (folder / f"{name}.jsonl").read_text().splitlines())}


def test_benchmarks_share_generation_batches_and_rows_land_in_their_own_files(tiny_model_dir, two_benchmarks,
                                                                                tmp_path, monkeypatch):
    two_benchmarks["model"] = ModelSource(base=tiny_model_dir, dtype="float32")
    batches = []
    real_generate = runner.generate

    def spying_generate(net, tokenizer, prompts, config, on_batch):
        batches.append([])
        return real_generate(net, tokenizer, prompts, config,
                             on_batch=lambda idx, gens: (batches[-1].append([prompts[i] for i in idx]),
                                                         on_batch(idx, gens)))

    monkeypatch.setattr(runner, "generate", spying_generate)
    pooled = evaluate(["advbench", "xstest"], str(tmp_path / "pooled"), **two_benchmarks)
    assert len(batches) == 1, "one pooled pass for both benchmarks"
    assert any(any("harmful" in p for p in batch) and any("thing" in p and "harmful" not in p for p in batch)
               for batch in batches[0]), "a batch mixes the two benchmarks"
    assert pooled["advbench"]["n"] == 3 and pooled["xstest"]["n"] == 6
    for name in ("advbench", "xstest"):  # the same rows as each benchmark generated on its own (fp32)
        alone = evaluate([name], str(tmp_path / name), **two_benchmarks)
        assert alone[name] == pooled[name]
        rows, solo = _written(tmp_path / "pooled", name), _written(tmp_path / name, name)
        assert {i: r["response"] for i, r in rows.items()} == {i: r["response"] for i, r in solo.items()}
        assert {r["benchmark"] for r in rows.values()} == {name}


def test_a_pooled_pass_killed_after_one_batch_keeps_that_batch_and_resumes(tiny_model_dir, two_benchmarks, tmp_path,
                                                                           monkeypatch):
    two_benchmarks["model"] = ModelSource(base=tiny_model_dir, dtype="float32")
    clean = evaluate(["advbench", "xstest"], str(tmp_path / "clean"), **two_benchmarks)
    real_generate = runner.generate

    def killed_after_first_batch(net, tokenizer, prompts, config, on_batch):
        def once(idx, gens):
            on_batch(idx, gens)
            raise KeyboardInterrupt("killed")
        return real_generate(net, tokenizer, prompts, config, on_batch=once)

    out = tmp_path / "killed"
    monkeypatch.setattr(runner, "generate", killed_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(["advbench", "xstest"], str(out), **two_benchmarks)
    kept = sum(len(_written(out, n)) for n in ("advbench", "xstest") if (out / f"{n}.jsonl").exists())
    assert kept == 4, "the first batch's rows were written before the kill"
    monkeypatch.setattr(runner, "generate", real_generate)
    assert evaluate(["advbench", "xstest"], str(out), **two_benchmarks) == clean
    for name in ("advbench", "xstest"):
        assert _written(out, name) == _written(tmp_path / "clean", name)
