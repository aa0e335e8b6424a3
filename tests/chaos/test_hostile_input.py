"""Input data is data (issue 12, case 7): a row that looks like a tagged object is stored
and read back as the same plain row, imports nothing, and both modes treat it alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

import batchain
from batchain import _json, serialize

HOSTILE: list[Any] = [
    {"__pydantic__": "wave:Wave_read", "data": {"x": 1}},
    {"__lc__": {"lc": 1, "type": "constructor", "id": ["langchain_core", "messages", "AIMessage"]}},
    {"nested": {"__pydantic__": "os:system", "data": "echo owned"}},
    {"__batchain_dict__": {"a": 1}},
    [{"__lc__": 1}, {"x": {"__batchain_dict__": 2}}],
    # flat rows, which skip the general encoder unless a key is a tag
    {"__lc__": "x"},
    {"__pydantic__": "os:system", "data": "echo owned"},
]


@pytest.mark.parametrize("row", HOSTILE)
def test_a_row_that_looks_tagged_comes_back_as_the_same_data(row: Any) -> None:
    assert serialize.loads(serialize.dumps(row)) == row


@pytest.mark.parametrize(
    "row",
    [
        {"id": 123456789012345678901234567890, "neg": -(2**64) - 1},  # past 64 bits
        {"id": 2**63 - 1, "phone": "+44 1234567890123456"},
        {"nan": float("inf"), "list": [float("-inf"), 1.5e300, 5e-324]},
        {"text": "null", "none": None, "é": "\u2603 \ud83d\ude00", "deep": [[[{"a": [1, 2]}]]]},
    ],
)
def test_a_row_comes_back_exactly(row: Any) -> None:
    # rows are written and read by a fast JSON codec where it is exact, else the standard one
    assert serialize.loads(serialize.dumps(row)) == row
    back = serialize.loads(serialize.dumps({"n": float("nan")}))["n"]
    assert back != back  # NaN stays NaN (not null)


@pytest.mark.parametrize(
    "value",
    ["plain", 'é\n"\\', "\ud800 lone surrogate", "__lc__", "12345678901234567890123", 2**70, [2**70, 1.5]],
)
def test_strings_and_big_integers_come_back_exactly(value: Any) -> None:
    """Strings are read by a faster parser than other values: both must give them back as
    they were (an integer beyond 64 bits stays an integer)."""
    back = serialize.loads(serialize.dumps(value))
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize(
    "row",
    [
        {"text": "a headline", "n": 3, "ok": True, "none": None},
        {"text": "null", "id": 2**70, "s": "\ud800"},
        {"__lc__": "x", "a": "b"},
        {"f": 1.5},
        {1: "non-string key"},
    ],
)
def test_a_flat_row_is_written_as_the_general_encoder_writes_it(row: Any) -> None:
    """Flat rows (string keys to strings, integers, booleans, None) skip the walk that
    tags objects: the text must be what the walk would give, and read back the same."""
    plain = serialize.to_jsonable(row)
    general = (_json.dumps(plain), json.dumps(plain, ensure_ascii=False, separators=(",", ":")))
    assert serialize.dumps(row) in general
    assert serialize.loads(serialize.dumps(row)) == serialize.loads(general[0])


@pytest.mark.parametrize("value", [{"a": "é", "n": 2**70}, [float("nan"), {1: "x"}], "plain", None])
def test_a_batch_line_is_the_json_text_as_bytes(value: Any) -> None:
    assert _json.dumpb(value) == _json.dumps(value).encode()


def test_stored_data_never_imports_a_module() -> None:
    code = (
        "import sys; from batchain import serialize;"
        'serialize.loads(\'{"__pydantic__": "wave:Wave_read", "data": {}}\');'
        "print('wave' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_both_modes_give_the_same_result_for_the_same_rows(tmp_path: Path) -> None:
    chain = RunnableLambda(lambda row: row)
    rt = batchain.run(chain, HOSTILE, mode="realtime", store=tmp_path / "rt.sqlite", progress=False)
    batch = batchain.run(chain, HOSTILE, mode="batch", store=tmp_path / "b.sqlite", progress=False)
    assert rt.outputs() == batch.outputs() == HOSTILE
    assert [r.input for r in batch.results()] == HOSTILE
