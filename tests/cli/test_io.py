"""Input readers and result writers (in-process: fast, and every edge case)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage
from pydantic import BaseModel

from batchain.cli.datafiles import BadRow, InputError, InputReader, OutputError, ResultWriter, result_row
from batchain.job import ItemResult
from batchain.states import ItemStatus


def lines(path: Path, *rows: str) -> Path:
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return path


# -- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_values_locations_and_bad_rows(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'\xef\xbb\xbf{"id": 1}\n'  # a byte-order mark on the first line
        b"\n"  # blank lines are skipped, not bad
        b'"just a string"\n'
        b'{"id": 2,}\n'
        b"\xff\xfe\n"
        b"[1, 2]\n"
        b'{"id": 3}'  # no final newline
    )
    reader = InputReader(str(src))
    records = list(reader)
    assert [r.value for r in records] == [{"id": 1}, "just a string", [1, 2], {"id": 3}]
    assert [r.line for r in records] == [1, 3, 6, 7]
    assert reader.n_read == 4 and reader.n_bad == 2
    assert [str(b) for b in reader.bad_rows] == [
        f"{src}:4: invalid JSON: Expecting property name enclosed in double quotes (column 10)",
        f"{src}:5: not valid UTF-8 (byte 1 of the line)",
    ]


def test_limit_counts_good_rows_and_reads_lazily(tmp_path: Path) -> None:
    src = lines(tmp_path / "in.jsonl", "{}", "oops", "{}", "{}")
    reader = InputReader(str(src), limit=2)
    assert len(list(reader)) == 2 and reader.n_bad == 1
    assert list(InputReader(str(src), limit=0)) == []
    # lazily: the generator has not read past what it yielded
    it = iter(InputReader(str(tmp_path / "in.jsonl")))
    assert next(it).line == 1


def test_stdin_and_gzip(tmp_path: Path) -> None:
    stdin = io.BytesIO(b'{"a": 1}\n{"a": 2}\n')
    reader = InputReader("-", stdin=stdin)
    assert [r.value for r in reader] == [{"a": 1}, {"a": 2}]
    assert reader.name == "<stdin>" and not stdin.closed
    gz = tmp_path / "in.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write('{"a": 1}\n')
    assert [r.value for r in InputReader(str(gz))] == [{"a": 1}]


def test_whole_input_problems_raise_at_once(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        InputReader(str(tmp_path / "missing.jsonl"))
    with pytest.raises(InputError, match="cannot tell the format"):
        InputReader(str(lines(tmp_path / "in.txt", "{}")))
    with pytest.raises(InputError, match="directory"):
        InputReader(str(tmp_path), fmt="jsonl")
    assert [r.value for r in InputReader(str(tmp_path / "in.txt"), fmt="jsonl")] == [{}]


# -- CSV -----------------------------------------------------------------------------------------


def test_csv_rows_quotes_and_bad_rows(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(
        b"\xef\xbb\xbfid,text\n"
        b'1,"hello, world"\n'
        b'2,"two\nlines"\n'
        b"3,too,many\n"
        b"\n"
        b"4,caf\xe9\n"  # latin-1, not UTF-8
        b"5,last\n"
    )
    reader = InputReader(str(src))
    records = list(reader)
    assert [r.value for r in records] == [
        {"id": "1", "text": "hello, world"},
        {"id": "2", "text": "two\nlines"},
        {"id": "5", "text": "last"},
    ]
    assert [r.line for r in records] == [2, 3, 8]
    assert [(b.line, b.message) for b in reader.bad_rows] == [
        (5, "expected 2 fields (as in the header), got 3"),
        (7, "not valid UTF-8"),
    ]


def test_csv_header_problems_and_tsv(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="duplicate column name 'a'"):
        list(InputReader(str(lines(tmp_path / "dup.csv", "a,a", "1,2"))))
    with pytest.raises(InputError, match="empty column name"):
        list(InputReader(str(lines(tmp_path / "empty.csv", "a,", "1,2"))))
    empty = tmp_path / "none.csv"
    empty.write_text("")
    assert list(InputReader(str(empty))) == []
    tsv = lines(tmp_path / "in.tsv", "a\tb", "1\tx, y")
    assert [r.value for r in InputReader(str(tsv))] == [{"a": "1", "b": "x, y"}]


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import datetime

    table = pa.table({"id": [1, 2], "when": [datetime.date(2024, 1, 2), None]})
    pq.write_table(table, tmp_path / "in.parquet")
    records = list(InputReader(str(tmp_path / "in.parquet")))
    assert [r.value for r in records] == [{"id": 1, "when": "2024-01-02"}, {"id": 2, "when": None}]
    assert [r.line for r in records] == [1, 2]


def test_bad_row_str() -> None:
    assert str(BadRow("data.jsonl", 12, "invalid JSON")) == "data.jsonl:12: invalid JSON"


# -- output --------------------------------------------------------------------------------------


class Verdict(BaseModel):
    label: str
    score: float


def results() -> list[ItemResult]:
    return [
        ItemResult(0, ItemStatus.SUCCEEDED, {"id": "a", "x": 1}, "plain text", None),
        ItemResult(1, ItemStatus.SUCCEEDED, {"id": "b"}, {"label": "tech", "n": [1, 2]}, None),
        ItemResult(2, ItemStatus.SUCCEEDED, "no id", AIMessage(content="hi"), None),
        ItemResult(3, ItemStatus.SUCCEEDED, {"id": 7}, Verdict(label="ok", score=0.5), None),
        ItemResult(4, ItemStatus.FAILED, {"id": "e"}, None, {"type": "E", "message": "m", "where": "chain"}),
    ]


def test_result_rows_are_faithful_json() -> None:
    rows = [result_row(r) for r in results()]
    assert [r["id"] for r in rows] == ["a", "b", None, 7, "e"]
    assert rows[0]["output"] == "plain text"
    assert rows[1]["output"] == {"label": "tech", "n": [1, 2]}
    assert rows[2]["output"]["__lc__"]["kwargs"]["content"] == "hi"
    assert rows[3]["output"]["data"] == {"label": "ok", "score": 0.5}
    assert rows[4]["status"] == "failed" and rows[4]["error"]["type"] == "E"
    assert rows[0]["cost"] is None
    assert result_row(results()[0], Decimal("0.00000795"))["cost"] == 7.95e-06


def test_jsonl_and_csv_files(tmp_path: Path) -> None:
    with ResultWriter(str(tmp_path / "out.jsonl")) as w:
        w.write_all(results())
    parsed = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert parsed == [result_row(r) for r in results()]

    with ResultWriter(str(tmp_path / "sub" / "out.csv.gz")) as w:
        w.write_all(results())
    with gzip.open(tmp_path / "sub" / "out.csv.gz", "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["output"] for r in rows[:2]] == ["plain text", '{"label": "tech", "n": [1, 2]}']
    assert rows[2]["id"] == "" and rows[3]["id"] == "7"
    assert json.loads(rows[4]["error"]) == {"type": "E", "message": "m", "where": "chain"}
    assert rows[0]["error"] == "" and rows[0]["cost"] == ""


def test_csv_cost_is_a_plain_decimal(tmp_path: Path) -> None:
    with ResultWriter(str(tmp_path / "out.csv")) as w:
        w.write(results()[0], Decimal("0.00000795"))
    assert next(csv.DictReader((tmp_path / "out.csv").open()))["cost"] == "0.00000795"


def test_stdout_and_atomic_replace(tmp_path: Path) -> None:
    buf = io.StringIO()
    with ResultWriter("-", stdout=buf) as w:
        w.write(results()[0])
    assert json.loads(buf.getvalue())["output"] == "plain text"

    target = tmp_path / "out.jsonl"
    target.write_text("previous\n")
    with pytest.raises(RuntimeError), ResultWriter(str(target)) as w:
        w.write(results()[0])
        raise RuntimeError("stopped half way")
    assert target.read_text() == "previous\n"  # never a half-written file under the final name
    assert list(tmp_path.iterdir()) == [target]


def test_output_format_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot tell the output format"):
        ResultWriter(str(tmp_path / "out.xlsx"))
    with pytest.raises(OutputError, match="directory"), ResultWriter(str(tmp_path)):
        pass
    with ResultWriter("/dev/null") as w:  # devices are written directly, as JSONL
        w.write(results()[0])


def test_rows_are_counted_before_reading_for_the_progress_total(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}')  # no newline after the last row
    assert InputReader(str(jsonl)).count_rows() == 3
    assert InputReader(str(jsonl), limit=2).count_rows() == 2
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(gzip.compress(b"1\n2\n3\n4\n"))
    assert InputReader(str(gz)).count_rows() == 4
    # a quoted field may span lines: rows, not lines, and not the header
    data = tmp_path / "in.csv"
    data.write_text('text,n\n"two\nlines",1\nplain,2\n\n')
    reader = InputReader(str(data))
    assert reader.count_rows() == 2 == len(list(reader.values()))
    assert InputReader("-", stdin=io.BytesIO(b"1\n2\n")).count_rows() is None  # read only once
