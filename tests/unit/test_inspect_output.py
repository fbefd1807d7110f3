"""``inspect --output`` replaces its file only once every row is written: a data error keeps the previous output."""

import pytest

from rt_lightning.commands.inspect import write_inspection
from rt_lightning.data.records import DataError


class Rows:
    def __init__(self, fail_after=None):
        self.fail_after = fail_after

    def inspect(self, split, limit):
        for index in range(3):
            if index == self.fail_after:
                raise DataError("data.jsonl, row 1: empty response")
            yield {"index": index, "num_trainable": 2}


def test_a_data_error_part_way_leaves_the_previous_output(tmp_path):
    output = tmp_path / "inspect.jsonl"
    assert write_inspection(Rows(), "train", None, str(output)) == 3
    before = output.read_text()
    with pytest.raises(DataError, match="row 1"):
        write_inspection(Rows(fail_after=1), "train", None, str(output))
    assert output.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["inspect.jsonl"]
