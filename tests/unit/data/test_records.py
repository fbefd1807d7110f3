import json

import pytest

from rt_lightning.data.records import DataError, FieldLayout, load_records
from tests.support.files import write_jsonl


def test_alpaca_joins_input_after_blank_line(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Summarise", "input": "Some text", "output": "Short."},
                                             {"instruction": "Hi", "input": "", "output": "Hello."}])
    records = load_records(str(path), layout="alpaca")
    assert [r.instruction for r in records] == ["Summarise\n\nSome text", "Hi"]
    assert [(r.source, r.row) for r in records] == [(str(path), 0), (str(path), 1)]


def test_dolly_joins_context(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "Q", "context": "C", "response": "R", "category": "x"}])
    assert load_records(str(path), layout="dolly")[0].instruction == "Q\n\nC"


def test_lima_hub_and_alpaca_layouts_keep_single_turn_only(tmp_path):
    hub = write_jsonl(tmp_path / "hub.jsonl",
                      [{"conversations": ["q1", "a1"]}, {"conversations": ["q", "a", "q", "a"]}])
    assert [(r.instruction, r.response) for r in load_records(str(hub), layout="lima")] == [("q1", "a1")]
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}", "history": []} for i in range(3)]
    rows.append({"instruction": "q", "input": "", "output": "a", "history": [["u", "v"]]})
    path = tmp_path / "lima.json"
    path.write_text(json.dumps(rows))
    assert len(load_records(str(path), layout="lima")) == 3


def test_lima_keeps_first_thousand(tmp_path):
    rows = [{"conversations": [f"q{i}", f"a{i}"]} for i in range(1005)]
    records = load_records(str(write_jsonl(tmp_path / "l.jsonl", rows)), layout="lima")
    assert len(records) == 1000 and records[-1].response == "a999"


def test_generic_field_mapping(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"q": "Question", "ctx": "More", "a": "Answer"}])
    record = load_records(str(path), layout=FieldLayout("q", "a", input="ctx"))[0]
    assert (record.instruction, record.response) == ("Question\n\nMore", "Answer")


def test_csv_and_parquet(tmp_path):
    import datasets

    csv_path = tmp_path / "x.csv"
    csv_path.write_text('instruction,output\n"Hi, there","Hello\nworld"\n', encoding="utf-8")
    assert load_records(str(csv_path))[0].response == "Hello\nworld"
    pq = tmp_path / "x.parquet"
    datasets.Dataset.from_list([{"prompt": "p", "completion": "c"}]).to_parquet(str(pq))
    assert load_records(str(pq))[0].instruction == "p"


def test_missing_field_names_file_row_and_key(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    with pytest.raises(DataError, match=r"bad\.jsonl, row 1: missing field 'output'"):
        load_records(str(path), layout="alpaca")


def test_empty_response_names_row(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl",
                       [{"instruction": "a", "output": "ok"}, {"instruction": "b", "output": "  "}])
    with pytest.raises(DataError, match=r"e\.jsonl, row 1: empty response"):
        load_records(str(path))


def write_outputs(path, outputs: tuple[bytes, ...]):
    """A file in the suffix's format with one row per raw ``output`` (bytes, so that bad encodings can be written)."""
    if path.suffix == ".jsonl":
        body = b"".join(b'{"instruction": "q", "output": "%s"}\n' % t for t in outputs)
    elif path.suffix == ".json":
        body = b"[" + b",\n".join(b'{"instruction": "q", "output": "%s"}' % t for t in outputs) + b"]"
    else:
        body = b"instruction,output\n" + b"".join(b"q,%s\n" % t for t in outputs)
    path.write_bytes(body)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_non_utf8_names_row(tmp_path, suffix):
    good, bad = "caf\u00e9".encode(), b"caf\xe9"  # latin-1 byte in the third row
    path = write_outputs(tmp_path / f"latin{suffix}", (good, good, bad))
    with pytest.raises(DataError, match=rf"latin\{suffix}, row 2.*not valid UTF-8"):
        load_records(str(path))


def test_invalid_json_line_names_row(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    with pytest.raises(DataError, match=r"j\.jsonl, row 1 \(line 2\): invalid JSON"):
        load_records(str(path))


def test_skip_mode_counts_and_logs(tmp_path, caplog):
    path = write_jsonl(tmp_path / "s.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""},
                                             {"instruction": "d"}, {"instruction": "e", "output": "f"}])
    records = load_records(str(path), layout="alpaca", on_bad_row="skip")
    assert [r.row for r in records] == [0, 3]
    assert "skipped 2 bad row(s)" in caplog.text and "row 2: missing field 'output'" in caplog.text


def test_missing_local_file_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(str(tmp_path / "nope.jsonl"))


def test_unknown_layout(tmp_path, small_jsonl):
    with pytest.raises(ValueError, match="Unknown layout 'sharegpt'"):
        load_records(str(small_jsonl), layout="sharegpt")


def test_skip_mode_skips_bad_json_lines_and_bad_bytes_with_file_and_line(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"instruction": "a", "output": "ok"}\n'
                     b'{"instruction": \n'                                 # not JSON
                     b'{"instruction": "c", "output": "caf\xe9"}\n'          # a latin-1 byte
                     b'["not", "an", "object"]\n'
                     b'{"instruction": "e", "output": "fine"}\n')
    records = load_records(str(path), layout="alpaca", on_bad_row="skip")
    assert [(r.row, r.response) for r in records] == [(0, "ok"), (4, "fine")]  # bad lines keep their row numbers
    assert "skipped 3 bad row(s)" in caplog.text
    for where in ("row 1 (line 2): invalid JSON", "row 2 (line 3): field 'output' is not valid UTF-8",
                  "row 3 (line 4): expected a JSON object"):
        assert f"mixed.jsonl, {where}" in caplog.text


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_skip_mode_skips_bad_bytes_in_json_arrays_and_csv(tmp_path, suffix):
    good, bad = b"fine", b"caf\xe9"
    path = write_outputs(tmp_path / f"latin{suffix}", (good, bad, good))
    assert [r.row for r in load_records(str(path), layout="alpaca", on_bad_row="skip")] == [0, 2]


def test_a_json_array_that_does_not_parse_stops_even_in_skip_mode(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"instruction": "a", "output": "b"},\n{"instruction": ]')
    with pytest.raises(DataError, match=r"broken\.json: invalid JSON at line 2"):
        load_records(str(path), layout="alpaca", on_bad_row="skip")
