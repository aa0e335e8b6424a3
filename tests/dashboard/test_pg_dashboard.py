"""The dashboard over a PostgreSQL store: the same pages, read-only, from any machine that
reaches the database; the URL's password is never shown."""

from __future__ import annotations

import time

import batchain
from batchain.sandbox import Sandbox, SandboxConfig
from tests.dashboard.conftest import start_dashboard
from tests.engine.conftest import make_openai

SECRET = "pw-0123456789SECRET"


def test_the_dashboard_reads_a_postgres_store(pg_url: str) -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    url = pg_url.replace("postgres@", f"postgres:{SECRET}@", 1)  # the test server trusts any password
    with Sandbox(SandboxConfig(batch_processing_s=0.1)) as sandbox:
        chain = ChatPromptTemplate.from_template("Say {x}") | make_openai(sandbox) | StrOutputParser()
        job = batchain.run(
            chain, [{"x": i} for i in range(6)], store=url, mode="batch", progress=False, poll_min=0.02
        )
        ledger = sandbox.ledger()
        assert len(ledger) == 6 and {e.tier for e in ledger} == {"batch"} and not sandbox.duplicates()
    assert job.counts["succeeded"] == 6
    dash = start_dashboard(url)  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 60
        while True:
            data = dash.json("/api/jobs")
            if data["jobs"][0]["cost_state"] != "computing" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [r["id"] for r in data["jobs"]] == [job.id]
        assert SECRET not in data["store"] and "127.0.0.1" in data["store"]
        page = dash.json(f"/api/jobs/{job.id}")
        assert page is not None and page["job"]["counts"]["succeeded"] == 6
        status, body, _ = dash.get(f"/api/jobs/{job.id}/results.jsonl")
        assert status == 200 and len(body.splitlines()) == 6 and SECRET.encode() not in body
    finally:
        dash.process.kill()
        dash.process.wait()
