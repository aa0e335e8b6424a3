"""The ``batchain`` command line, driven as a real console script in subprocesses.

Every model call goes to a sandbox running in this test process; every command runs in
its own process, so jobs are found again through the store, as a user would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

import batchain
from batchain.sandbox import Sandbox
from tests.cli.conftest import CHAIN, HEADLINES, LABELS, Cli
from tests.conftest import TEST_KEY

RUN_OPTIONS = (
    "--output",
    "--mode",
    "--store",
    "--concurrency",
    "--rpm",
    "--tpm",
    "--max-retries",
    "--timeout",
    "--no-cache",
    "--limit",
    "--job-id",
    "--quiet",
)
SUBMIT_OPTIONS = (
    *(o for o in RUN_OPTIONS if o != "--output"),
    "--poll-interval",
    "--budget",
    "--max-batch-size",
    "--max-open-batches",
    "--max-enqueued-tokens",
    "--realtime-fallback",
    "--endpoint-mode",
    "--batch-only",
)
COMMANDS = [
    [],
    ["run"],
    ["submit"],
    ["wait"],
    ["resume"],
    ["retry"],
    ["jobs"],
    ["status"],
    ["results"],
    ["report"],
    ["cost"],
    ["cancel"],
    ["compact"],
    ["estimate"],
    ["demo"],
    ["sandbox"],
    ["sandbox", "serve"],
]
#: what every command's help must mention, beyond its usage line
HELP_MENTIONS = {
    "run": (
        "YAML chain file",
        "--priority",
        "--priority-field",
        "--deadline",
        "--detach",
        "--poll-interval",
        "Ctrl-C",
    ),
    "submit": ("job id on stdout", "batchain wait JOB"),
    "wait": ("--output", "--poll-interval", "Exit", "INPUT"),
    "resume": ("--budget", "--poll-interval"),
    "retry": ("failed",),
    "status": ("--json", "Exit code"),
    "results": ("--output", "input order"),
    "report": ("--json", "--prices", "round", "cache hits"),
    "cost": ("--json",),
    "cancel": ("kept",),
    "estimate": ("--pilot", "--json"),
    "jobs": ("--limit", "--json"),
    "compact": ("--vacuum", "finished", "cache"),
    "demo": ("--sandbox", "--n"),
}


def headlines(n: int, prefix: str = "") -> list[dict[str, str]]:
    rows = [json.loads(line) for line in HEADLINES.read_text().splitlines()[:n]]
    return [{"id": r["id"], "headline": prefix + r["headline"]} for r in rows]


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def job_id_from(stderr: str) -> str:
    for word in stderr.split():
        if word.startswith("job-"):
            return word
    raise AssertionError(f"no job id in: {stderr}")


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("batchain: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- help and usage ----------------------------------------------------------------------------


HELP_SCRIPT = """
import contextlib, io, json, sys
from batchain.cli import run_cli
out = {}
for cmd in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = run_cli([*cmd, "--help"])
    out[" ".join(cmd)] = [code, buf.getvalue()]
# help is instant: nothing heavy is imported for it
out["imported"] = [0, [m for m in ("langchain_core", "openai", "anthropic") if m in sys.modules]]
print(json.dumps(out))
"""


def test_every_command_has_help(cli_offline: Cli) -> None:
    # the console script itself, then every command's help in one interpreter (each
    # interpreter costs a second of imports)
    top = cli_offline("--help")
    assert top.returncode == 0 and "Usage: batchain" in top.stdout and "Exit codes" in top.stdout
    for cmd in COMMANDS[1:]:
        if cmd != ["cost"]:  # the former name of report: hidden, but it still works
            assert cmd[0] in top.stdout
    assert "│ cost " not in top.stdout
    proc = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, json.dumps(COMMANDS[1:])],
        capture_output=True,
        text=True,
        env=cli_offline.env | {"COLUMNS": "300"},  # one line per option: phrases stay whole
        cwd=cli_offline.cwd,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    helps = json.loads(proc.stdout)
    assert helps.pop("imported") == [0, []]
    for cmd in COMMANDS[1:]:
        code, text = helps[" ".join(cmd)]
        assert code == 0 and "Usage: batchain " + " ".join(cmd) in text, (cmd, text)
    for option in RUN_OPTIONS:
        assert option in helps["run"][1], option
    for option in SUBMIT_OPTIONS:
        assert option in helps["submit"][1], option
    assert "--detach" not in helps["submit"][1] and "--priority" not in helps["submit"][1]
    for command, needles in HELP_MENTIONS.items():
        for needle in needles:
            assert needle in helps[command][1], (command, needle)
    for option in ("--host", "--port", "--latency-ms", "--rpm", "--error-rate"):
        assert option in helps["sandbox serve"][1], option


def test_usage_errors_exit_2_with_one_line(cli_offline: Cli) -> None:
    no_args = cli_offline()
    assert no_args.returncode == 2 and "Usage:" in no_args.stdout
    bad_option = cli_offline("run", CHAIN, "x.jsonl", "--concurrency", "many")
    assert bad_option.returncode == 2
    assert_one_line_error(bad_option, "--concurrency", "batchain run --help")
    unknown_job = cli_offline("status", "job-nope")
    assert unknown_job.returncode == 2
    assert_one_line_error(unknown_job, "job-nope")


def test_missing_chain_and_failing_chain_module(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", headlines(2))
    missing = cli("run", "no_such_file.py:chain", str(data))
    assert missing.returncode == 2
    assert_one_line_error(missing, "no_such_file.py")
    # a chain module that fails on import, with the API key in its message
    (tmp_path / "broken.py").write_text(
        "import os\nraise RuntimeError('cannot connect with key ' + os.environ['OPENAI_API_KEY'])\n"
    )
    broken = cli("run", "broken.py:chain", str(data))
    assert broken.returncode == 2
    assert_one_line_error(broken, "broken.py", "RuntimeError")
    assert TEST_KEY not in broken.stderr + broken.stdout
    assert not cli.store.exists() or "job-" not in cli.here("jobs", "--json").stdout


# -- running ------------------------------------------------------------------------------------


def test_run_jsonl_then_inspect_from_other_processes(cli: Cli, cli_sandbox: Sandbox, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", headlines(40))
    out = tmp_path / "out" / "results.jsonl"
    proc = cli("run", CHAIN, str(data), "-o", str(out), "--limit", "30", "--concurrency", "8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # results went to the file, the summary to stderr
    rows = read_jsonl(out)
    assert [r["index"] for r in rows] == list(range(30))
    assert [r["id"] for r in rows] == [h["id"] for h in headlines(30)]
    assert all(r["status"] == "succeeded" and r["output"] in LABELS and r["error"] is None for r in rows)
    job_id = job_id_from(proc.stderr)
    assert "30 ok · 0 failed" in proc.stderr and "30 paid" in proc.stderr
    assert f"batchain status {job_id}" in proc.stderr
    assert len(cli_sandbox.ledger()) == 30

    listed = [json.loads(line) for line in cli.here("jobs", "--json").stdout.splitlines()]
    assert [(j["id"], j["status"], j["counts"]["succeeded"]) for j in listed] == [(job_id, "completed", 30)]
    table = cli.here("jobs")
    assert table.returncode == 0 and job_id in table.stdout and "completed" in table.stdout

    status = cli("status", job_id)
    assert status.returncode == 0
    assert "30 succeeded" in status.stdout and "30 paid" in status.stdout
    data_status = json.loads(cli.here("status", job_id, "--json").stdout)
    assert data_status["usage"]["requests"] == 30

    as_csv = tmp_path / "again.csv"
    results = cli.here("results", job_id, "-o", str(as_csv))
    assert results.returncode == 0 and "30 rows" in results.stderr
    csv_rows = list(csv.DictReader(as_csv.open()))
    assert [r["output"] for r in csv_rows] == [r["output"] for r in rows]
    assert list(csv_rows[0]) == ["index", "id", "status", "output", "error", "cost"]
    assert all(float(r["cost"]) > 0 for r in csv_rows)  # gpt-4o-mini has a catalog price


def test_csv_in_csv_out(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text(
        "id,headline\n"
        'c1,"Stocks rally, led by chip makers"\n'
        'c2,"A headline\nover two lines about the film festival"\n'
        "c3,Striker scores twice as the team wins the cup\n"
    )
    out = tmp_path / "out.csv"
    proc = cli("run", CHAIN, str(data), "-o", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: no summary
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["c1", "c2", "c3"]
    assert all(r["status"] == "succeeded" and r["output"] in LABELS and r["error"] == "" for r in rows)


def test_stdin_to_stdout(cli: Cli) -> None:
    rows = headlines(3)
    proc = cli("run", CHAIN, "-", stdin="".join(json.dumps(r) + "\n" for r in rows))
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    assert "3 ok" in proc.stderr and "results  stdout" in proc.stderr


def test_malformed_line_is_reported_skipped_and_counted(cli: Cli, tmp_path: Path) -> None:
    good = headlines(4)
    data = tmp_path / "bad.jsonl"
    lines = [
        json.dumps(good[0]),
        json.dumps(good[1]),
        '{"id": "x", "headline": broken',
        "",
        json.dumps(good[2]),
        json.dumps(good[3]),
    ]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    proc = cli("run", CHAIN, str(data), "-o", str(out))
    assert proc.returncode == 1, proc.stderr
    assert f"{data}:3: invalid JSON" in proc.stderr
    assert "4 ok · 0 failed · 1 bad input row skipped" in proc.stderr
    assert [r["id"] for r in read_jsonl(out)] == [g["id"] for g in good]


def test_failed_items_then_retry_in_another_process(cli: Cli, cli_sandbox: Sandbox, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", headlines(6, prefix="retry: "))
    cli_sandbox.configure(error_rate=1.0)
    first = cli("run", CHAIN, str(data), "-o", str(tmp_path / "first.jsonl"), "--max-retries", "0")
    assert first.returncode == 1, first.stderr
    job_id = job_id_from(first.stderr)
    assert "0 ok · 6 failed" in first.stderr and "InternalServerError" in first.stderr
    assert f"batchain retry {job_id}" in first.stderr
    status = cli.here("status", job_id)
    assert status.returncode == 1 and "6 failed" in status.stdout

    cli_sandbox.configure(error_rate=0.0)
    retried = cli("retry", job_id, "-o", str(tmp_path / "second.jsonl"))
    assert retried.returncode == 0, retried.stderr
    assert "6 ok · 0 failed" in retried.stderr
    assert all(r["status"] == "succeeded" for r in read_jsonl(tmp_path / "second.jsonl"))
    assert cli.here("status", job_id).returncode == 0


def test_ctrl_c_pauses_and_resume_finishes(cli: Cli, cli_sandbox: Sandbox, tmp_path: Path) -> None:
    cli_sandbox.configure(latency_ms=150)
    data = write_jsonl(tmp_path / "in.jsonl", headlines(40, prefix="interrupt: "))
    proc = cli.popen(
        "run", CHAIN, str(data), "-c", "2", "--job-id", "job-ctrl-c", "-o", str(tmp_path / "a.jsonl")
    )
    _wait_for_progress(cli.store, "job-ctrl-c", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "paused" in err and "batchain resume job-ctrl-c" in err
    paid_before = len(cli_sandbox.ledger())

    cli_sandbox.configure(latency_ms=0)
    resumed = cli("resume", "job-ctrl-c", "-o", str(tmp_path / "b.jsonl"))
    assert resumed.returncode == 0, resumed.stderr
    rows = read_jsonl(tmp_path / "b.jsonl")
    assert len(rows) == 40 and all(r["status"] == "succeeded" for r in rows)
    # every call paid exactly once across both processes
    assert len(cli_sandbox.ledger()) == 40 >= paid_before
    assert not cli_sandbox.duplicates()


def many(n: int, prefix: str) -> list[dict[str, str]]:
    """``n`` distinct rows, more than the headlines file holds."""
    base = headlines(200)
    return [
        {"id": f"{prefix}-{i}", "headline": f"{prefix} {i}: {base[i % 200]['headline']}"} for i in range(n)
    ]


def _interrupted_with_unread_inputs(cli: Cli, cli_sandbox: Sandbox, data: Path, job_id: str) -> None:
    """Run a realtime job over ``data`` and Ctrl-C it before it has read all its rows (its
    window holds 256 items at -c 2)."""
    cli_sandbox.configure(latency_ms=300)
    proc = cli.popen("run", CHAIN, str(data), "-c", "2", "--job-id", job_id, "-o", os.devnull)
    _wait_for_progress(cli.store, job_id, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert not batchain.Job.open(job_id, store=cli.store).record.inputs_complete
    # the job can reopen its file: the next step needs no INPUT
    assert f"batchain resume {job_id}" in err and f"batchain resume {job_id} INPUT" not in err
    cli_sandbox.configure(latency_ms=0)


def test_resume_reopens_the_input_file_the_job_read(cli: Cli, cli_sandbox: Sandbox, tmp_path: Path) -> None:
    """`batchain resume JOB` after Ctrl-C needs no INPUT: the job recorded its file, and
    the rest of it is read again from there; every call is paid once."""
    data = write_jsonl(tmp_path / "in.jsonl", many(300, "reopen"))
    _interrupted_with_unread_inputs(cli, cli_sandbox, data, "job-reopen")

    resumed = cli("resume", "job-reopen", "-o", str(tmp_path / "out.jsonl"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"reading the rest of the inputs again from {data}" in resumed.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == 300 and all(r["status"] == "succeeded" for r in rows)
    assert len(cli_sandbox.ledger()) == 300 and not cli_sandbox.duplicates()


def test_resume_says_when_the_input_file_moved_or_changed(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", many(300, "moved"))
    _interrupted_with_unread_inputs(cli, cli_sandbox, data, "job-moved")

    moved = data.rename(tmp_path / "elsewhere.jsonl")
    gone = cli("resume", "job-moved")
    assert gone.returncode == 2, gone.stderr
    assert f"from {data}, which is no longer there" in gone.stderr
    assert "batchain resume job-moved INPUT" in gone.stderr

    moved.rename(data)
    with data.open("a") as f:
        f.write(json.dumps({"id": "extra", "headline": "one more row"}) + "\n")
    changed = cli("resume", "job-moved")
    assert changed.returncode == 2 and "which has changed since" in changed.stderr

    again = cli("resume", "job-moved", str(data), "-o", str(tmp_path / "out.jsonl"))
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 301
    assert not cli_sandbox.duplicates()


def test_budget_pauses_then_resume_with_more_and_cost_reports(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", headlines(20, prefix="budget: "))
    estimate = cli("estimate", CHAIN, str(data), "--json")
    assert estimate.returncode == 0, estimate.stderr
    guess = json.loads(estimate.stdout)
    assert guess["items"] == 20 and guess["models"] == {"openai/gpt-4o-mini": 20}
    assert cli.store.exists() is False or not cli.here("jobs", "--json").stdout  # a dry run pays nothing

    tight = cli("run", CHAIN, str(data), "--budget", "0.00005", "--job-id", "job-budget", "-o", "/dev/null")
    assert tight.returncode == 130, tight.stderr
    assert "budget exhausted" in tight.stderr and "--budget MORE" in tight.stderr
    more = cli("resume", "job-budget", "--budget", "1", "-o", str(tmp_path / "out.jsonl"))
    assert more.returncode == 0, more.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == 20 and all(r["status"] == "succeeded" and r["cost"] > 0 for r in rows)
    report = json.loads(cli.here("report", "job-budget", "--json").stdout)
    assert abs(float(report["paid"]) - sum(r["cost"] for r in rows)) < 1e-9


def _wait_for_progress(store: Path, job_id: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if store.exists():
            try:
                if batchain.Job.open(job_id, store=store).counts["succeeded"] >= 2:
                    return
            except KeyError:
                pass
        time.sleep(0.1)
    raise AssertionError("the job made no progress")


def test_batch_and_auto_modes_blocking_detached_cancelled(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    cli_sandbox.configure(batch_processing_s=0.1)
    data = write_jsonl(tmp_path / "in.jsonl", headlines(6, prefix="batch: "))
    blocking = cli(
        "run", CHAIN, str(data), "--mode", "batch", "--poll-interval", "0.1", "-o", str(tmp_path / "b.jsonl")
    )
    assert blocking.returncode == 0, blocking.stderr
    assert [r["status"] for r in read_jsonl(tmp_path / "b.jsonl")] == ["succeeded"] * 6
    assert {e.tier for e in cli_sandbox.ledger()} == {"batch"}

    urgent = [dict(h, urgent=i % 2 == 0) for i, h in enumerate(headlines(4, prefix="auto: "))]
    auto = cli(
        "run",
        CHAIN,
        str(write_jsonl(tmp_path / "auto.jsonl", urgent)),
        "--mode",
        "auto",
        "--priority-field",
        "urgent",
        "--deadline",
        "1h",
        "--poll-interval",
        "0.1",
        "-o",
        str(tmp_path / "auto.out.jsonl"),
    )
    assert auto.returncode == 0, auto.stderr
    assert "2 calls realtime · 2 in 1 provider batch" in auto.stderr

    # the provider sits on it: its first answer is due after 10 minutes (at 60 s, one of
    # the 6 came back after 10 s, before a loaded machine had submitted and cancelled)
    cli_sandbox.configure(batch_processing_s=3600)
    other = write_jsonl(tmp_path / "other.jsonl", headlines(6, prefix="detached: "))
    # --detach is `batchain submit`; a YAML chain is reloaded from the job to cancel at the provider
    yaml_chain = str(Path(CHAIN.partition(":")[0]).with_name("classify.yaml"))
    detached = cli("run", yaml_chain, str(other), "--mode", "batch", "--detach", "--job-id", "job-det")
    assert detached.returncode == 0, detached.stderr
    assert detached.stdout == "job-det\n"
    assert "job-det waiting" in detached.stderr and "1 submitted" in detached.stderr
    status = json.loads(cli.here("status", "job-det", "--json").stdout)
    assert status["status"] == "waiting" and status["batches"][0]["status"] == "submitted"
    cancelled = cli("cancel", "job-det")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "6 items cancelled" in cancelled.stderr
    assert cli.here("status", "job-det").returncode == 1  # cancelled items are not successes


# -- demo and sandbox ---------------------------------------------------------------------------


def test_demo_runs_real_jobs_on_the_sandbox(cli_offline: Cli) -> None:
    proc = cli_offline("demo", "--n", "12", "--compare", "6", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "not set: using the built-in sandbox" in out
    assert "accuracy" in out and "recall" in out
    for model in ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5"):
        assert model in out
    # the demo's jobs are in a store of its own, beside the default one, which it leaves alone
    demo_store = cli_offline.store.with_name("demo.sqlite")
    assert f"batchain jobs --store {demo_store}" in out
    assert not cli_offline.store.exists() or not cli_offline.here("jobs", "--json").stdout.strip()
    listing = cli_offline("jobs", "--json", "--store", str(demo_store))
    listed = [json.loads(line) for line in listing.stdout.splitlines()]
    assert sorted(j["counts"]["succeeded"] for j in listed) == [6, 12, 12]
    assert sorted(j["mode"] for j in listed) == ["batch", "realtime", "realtime"]
    assert "in batch vs" in out


def test_sandbox_serve_prints_urls_and_answers(cli_offline: Cli) -> None:
    proc = cli_offline.popen("sandbox", "serve", "--port", "0", "--latency-ms", "1")
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("batchain sandbox listening on http://127.0.0.1:")
        url = banner.split()[4]
        rest = "".join(proc.stdout.readline() for _ in range(6))
        assert f"OPENAI_BASE_URL={url}/v1" in rest and f"ANTHROPIC_BASE_URL={url}" in rest
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"authorization": "Bearer sk-anything"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_sandbox_serve_bad_knob_is_a_usage_error(cli_offline: Cli) -> None:
    proc = cli_offline("sandbox", "serve", "--error-rate", "2")
    assert proc.returncode == 2
    assert_one_line_error(proc, "--error-rate")


def test_a_model_name_typo_gets_one_clear_warning_before_the_run(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    """A model the price catalog does not know (here a typo) is named once, before anything
    is sent, as one line with the nearest known models: not Python's raw warning, not twice."""
    chain = tmp_path / "typo.yaml"
    chain.write_text("model:\n  provider: openai\n  name: gpt-4o-mni\nprompt:\n  user: 'Say {headline}'\n")
    data = write_jsonl(tmp_path / "in.jsonl", headlines(3))
    proc = cli("run", str(chain), str(data), "-o", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "gpt-4o-mni" in line]
    assert len([line for line in warned if "warning" in line]) == 1, proc.stderr
    assert warned[0].startswith("batchain: warning: no price for openai/gpt-4o-mni"), warned
    assert "Did you mean gpt-4o-mini" in warned[0]
    assert "UnknownPriceWarning" not in proc.stderr
    assert len(cli_sandbox.ledger()) == 3 and not cli_sandbox.duplicates()
