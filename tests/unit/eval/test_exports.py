import json

import pytest

from rt_lightning.eval.alpaca_eval import to_alpaca_eval
from tests.support.files import write_jsonl


@pytest.fixture
def alpaca_reference(tmp_path):
    rows = [{"instruction": f"Instruction {i}", "output": f"ref {i}", "generator": "ref", "dataset": "selfinstruct"}
            for i in range(5)]
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(rows))
    return path


def results(tmp_path, ids):
    return write_jsonl(tmp_path / "alpaca_eval.jsonl", [
        {"id": f"alpaca_eval-{i}", "instruction": f"Instruction {i}", "response": f"answer {i}", "subset": ""}
        for i in ids])


def test_export_is_in_benchmark_order_and_loads_with_alpaca_evals_reader(tmp_path, alpaca_reference):
    out = tmp_path / "rt.json"
    n = to_alpaca_eval(str(results(tmp_path, [3, 1, 0, 4, 2])), str(out), "gemma-rt-greedy", path=str(alpaca_reference))
    assert n == 5
    rows = json.loads(out.read_text())
    assert [r["instruction"] for r in rows] == [f"Instruction {i}" for i in range(5)]
    assert rows[0] == {"instruction": "Instruction 0", "output": "answer 0", "generator": "gemma-rt-greedy",
                       "dataset": "selfinstruct"}
    utils = pytest.importorskip("alpaca_eval.utils")
    frame = utils.load_or_convert_to_dataframe(str(out))
    assert {"instruction", "output", "generator"} <= set(frame.columns) and len(frame) == 5
    assert utils.get_generator_name(None, frame) == "gemma-rt-greedy"


def test_missing_outputs_are_an_error(tmp_path, alpaca_reference):
    with pytest.raises(ValueError, match="1 AlpacaEval instruction"):
        to_alpaca_eval(str(results(tmp_path, [0, 1, 2, 3])), str(tmp_path / "x.json"), "g", path=str(alpaca_reference))
