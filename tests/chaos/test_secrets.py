"""API keys of any format never reach the store or errors (issue 12, case 8): the actual
key values of the job's models are redacted, not only strings that look like keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI

import batchain
from batchain.sandbox import Sandbox

AZURE_STYLE_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # 32 hex digits: no sk- prefix


def test_a_key_of_any_format_is_redacted_from_errors_and_the_store(sandbox: Sandbox, tmp_path: Path) -> None:
    model = ChatOpenAI(model="gpt-4o-mini", api_key=AZURE_STYLE_KEY, base_url=sandbox.openai_base_url)

    def check(row: dict[str, Any]) -> dict[str, Any]:
        if row["x"] == 2:  # fails before the model's client is ever built
            raise ValueError(f"refusing to call with key {AZURE_STYLE_KEY} for row {row}")
        return row

    chain = RunnableLambda(check) | ChatPromptTemplate.from_template("{x}") | model
    store = tmp_path / "s.sqlite"
    job = batchain.run(chain, [{"x": 1}, {"x": 2}], store=store, progress=False)
    assert job.counts["failed"] == 1
    errors = repr(job.errors())
    assert "refusing to call with key" in errors and AZURE_STYLE_KEY not in errors
    for path in tmp_path.iterdir():
        assert AZURE_STYLE_KEY.encode() not in path.read_bytes(), path
