"""Issue 15's reference workload: billed cost and wall time of one 3-stage, 2-provider
chain run by LangChain's ``abatch`` and by batchain in each mode, in one run.

The workload: ``system | gpt-5-mini`` -> ``system | claude-haiku-4-5`` ->
``system | gpt-5-mini``, every stage with the same long system prompt (about 480 tokens as
the issue measured it, or ``--system-tokens``), over ``--n`` inputs of which ``--dup`` are
repeats of earlier ones. The sandbox runs in its own process with realtime latency and
flex latency set, and every run starts from a reset sandbox.

Cost is the sandbox ledger priced here, by this script, from the ledger's token counts
and genai-prices' list prices: batch and flex pay half (OpenAI flex = Batch API rates),
a cache read pays the catalog's cache-read rate (halved in a batch), Anthropic's 1-hour
cache writes pay 2x the input rate (5-minute writes 1.25x). batchain's own accounting is
not used, so it is checked, not trusted.

    python bench/bench_cost.py                    # both workloads, every client
    python bench/bench_cost.py --only batch,flex  # some clients
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from genai_prices import Usage, calc_price
from langchain_anthropic import ChatAnthropic
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI

import batchain  # imported before any timing
from harness import fmt, sandbox, save

OPENAI_MODEL = "gpt-5-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
CLIENTS = ("abatch", "realtime", "flex", "flex_batch", "batch", "batch_nocache", "auto")

#: words of a policy text, repeated to length: a shared system prompt like a real one
_POLICY = (
    "You are a careful analyst for a support team. Follow the policy below exactly. "
    "Classify the customer's message, keep every answer short and factual, never invent "
    "order numbers, dates, prices or names, and say so when the message does not contain "
    "enough information. Escalate threats, legal claims and safety issues. Use plain "
    "language, no markdown, no greetings. "
)


def system_prompt(tokens: int) -> str:
    """About ``tokens`` tokens (~4 characters each) of policy text."""
    text = ""
    n = 0
    while len(text) < tokens * 4:
        n += 1
        text += f"Rule {n}. {_POLICY}"
    return text[: tokens * 4]


def inputs(n: int, dup: float, seed: int = 7) -> list[dict[str, str]]:
    """``n`` inputs, a fraction ``dup`` of them repeats of earlier ones (shuffled)."""
    unique = n - int(n * dup)
    base = [
        {"text": f"Customer {i} writes: my order {1000 + i} arrived damaged, what now?"}
        for i in range(unique)
    ]
    rng = random.Random(seed)
    items = base + [rng.choice(base) for _ in range(n - unique)]
    rng.shuffle(items)
    return items


def chain(system: str, openai_url: str, anthropic_url: str) -> Runnable[Any, str]:
    def stage(template: str, model: Any) -> Runnable[Any, Any]:
        return ChatPromptTemplate.from_messages([("system", system), ("human", template)]) | model

    gpt = ChatOpenAI(model=OPENAI_MODEL, api_key="sk-bench", base_url=openai_url, max_retries=8)
    claude = ChatAnthropic(
        model=ANTHROPIC_MODEL, api_key="sk-ant-bench", base_url=anthropic_url, max_retries=8, max_tokens=256
    )
    parse = StrOutputParser()
    return (
        stage("Classify this message: {text}", gpt)
        | parse
        | (lambda s: {"label": s})
        | stage("Summarize for the agent: {label}", claude)
        | parse
        | (lambda s: {"summary": s})
        | stage("Draft the reply to send: {summary}", gpt)
        | parse
    )


# -- pricing the ledger, independently of batchain ------------------------------------------


@dataclass
class Billed:
    usd: Decimal
    requests: dict[str, int]
    cache_read: int
    cache_write: int


def price_entry(e: Any) -> Decimal:
    """One ledger entry at list prices, by its tier."""
    provider = "openai" if e.provider == "openai" else "anthropic"
    cached = int(e.cached_tokens)
    written = int(e.cache_creation_tokens)
    written_1h = int(getattr(e, "cache_write_1h_tokens", 0) or 0)
    # the ledger's input_tokens is the whole prompt, cache reads and writes included
    plain = int(e.input_tokens) - cached - written
    usage = Usage(
        input_tokens=plain + cached + written - written_1h,
        cache_read_tokens=cached,
        cache_write_tokens=written - written_1h,
        output_tokens=int(e.output_tokens),
    )
    price = calc_price(usage, model_ref=e.model, provider_id=provider)
    total = Decimal(str(price.total_price))
    if written_1h:
        base = calc_price(Usage(input_tokens=written_1h), model_ref=e.model, provider_id=provider)
        total += 2 * Decimal(str(base.total_price))
    if e.tier in ("batch", "flex"):
        total /= 2
    return total


def bill(ledger: list[Any]) -> Billed:
    requests: dict[str, int] = {}
    for e in ledger:
        requests[e.tier] = requests.get(e.tier, 0) + 1
    return Billed(
        usd=sum((price_entry(e) for e in ledger), Decimal(0)),
        requests=requests,
        cache_read=sum(int(e.cached_tokens) for e in ledger),
        cache_write=sum(int(e.cache_creation_tokens) for e in ledger),
    )


# -- the clients -----------------------------------------------------------------------------


def run_client(name: str, sb: Any, system: str, items: list[dict[str, str]]) -> dict[str, Any]:
    c = chain(system, sb.openai_base_url, sb.anthropic_base_url)
    t0 = time.perf_counter()
    if name == "abatch":
        outs = asyncio.run(c.abatch(items, config={"max_concurrency": 64}, return_exceptions=True))
        ok = sum(isinstance(o, str) for o in outs)
        accounted = None
    else:
        mode, extra = {
            "realtime": ("realtime", {}),
            "flex": ("flex", {}),
            "flex_batch": ("flex", {"flex_fallback": "batch"}),
            "batch": ("batch", {}),
            "batch_nocache": ("batch", {"prompt_cache": "off"}),
            "auto": ("auto", {"priority": "normal"}),
        }[name]
        with tempfile.TemporaryDirectory() as tmp:
            job = batchain.run(
                c,
                items,
                mode=mode,
                store=Path(tmp) / "s.sqlite",
                progress=False,
                poll_min=0.2,
                poll_max=1.0,
                **extra,
            )
            ok = job.counts["succeeded"]
            accounted = Decimal(str(job.report().paid))
    wall = time.perf_counter() - t0
    return {"ok": ok, "wall_s": wall, "accounted_usd": accounted}


def workload(
    label: str, system_tokens: int, args: argparse.Namespace, clients: list[str]
) -> list[dict[str, Any]]:
    system = system_prompt(system_tokens)
    items = inputs(args.n, args.dup)
    rows: list[dict[str, Any]] = []
    knobs = {
        "latency_ms": args.latency_ms,
        "latency_jitter_ms": args.latency_ms / 5,
        "batch_validating_s": 0.05,
        "batch_processing_s": args.batch_s,
        "batch_finalizing_s": 0.05,
    }
    with sandbox(**knobs) as sb:
        sb.configure(flex_latency_ms=args.flex_latency_ms, flex_latency_jitter_ms=args.flex_latency_ms / 5)
        for name in clients:
            sb.reset()
            got = run_client(name, sb, system, items)
            ledger = sb.ledger()
            billed = bill(ledger)
            rows.append(
                {
                    "workload": label,
                    "client": name,
                    "ok": got["ok"],
                    "wall_s": got["wall_s"],
                    "billed_usd": billed.usd,
                    "accounted_usd": got["accounted_usd"],
                    "requests": billed.requests,
                    "cache_read": billed.cache_read,
                    "cache_write": billed.cache_write,
                    "billed_twice": len(sb.duplicates()),
                }
            )
            print(label, name, {k: v for k, v in rows[-1].items() if k != "workload"}, flush=True)
    base = next((r for r in rows if r["client"] == "abatch"), None)
    for r in rows:
        r["vs_abatch"] = float(r["billed_usd"] / base["billed_usd"]) if base else None
        r["wall_vs_abatch"] = r["wall_s"] / base["wall_s"] if base else None
    return rows


NOTES = [
    "abatch runs the chain with LangChain's own `abatch` (max_concurrency 64): every input,"
    " repeats included, pays every call at the standard tier; it is the 1.00x of the ratios.",
    "batchain's runs: realtime; flex (`mode=\"flex\"`: gpt-5-mini at OpenAI's flex tier,"
    " claude-haiku-4-5, which has no flex, at the standard tier); flex_batch (the same with"
    ' `flex_fallback="batch"`: claude-haiku-4-5 through the Batch API); batch (prompt caching on,'
    ' the default) and batch_nocache (`prompt_cache="off"`); auto with every item `normal`'
    " (gpt-5-mini at flex, claude-haiku-4-5 through the Batch API).",
    "Sandbox: realtime latency 300 ms and flex latency 600 ms by default (--latency-ms,"
    " --flex-latency-ms; +/- 20% jitter), 2 s provider batches (--batch-s); a repeat is"
    " answered from batchain's store, never paid again.",
    "A prefix is cached only from the model's minimum length up (OpenAI 1,024 tokens,"
    " claude-haiku-4-5 4,096): the ~480-token prompt of the issue's reference workload is"
    " below both, so no provider caches it and batch mode's discount stops at dedup x batch"
    " price; the long-prompt workload shows what prompt-cache-aware batching adds.",
]


def goal_notes(rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for label in dict.fromkeys(r["workload"] for r in rows):
        by = {r["client"]: r for r in rows if r["workload"] == label}
        parts = []
        if "batch" in by and by["batch"]["vs_abatch"] is not None:
            v = by["batch"]["vs_abatch"]
            parts.append(f"batch {v:.2f}x abatch (goal <= 0.30x: {'MET' if v <= 0.30 else 'NOT MET'})")
        if "flex" in by and by["flex"]["vs_abatch"] is not None:
            v = by["flex"]["vs_abatch"]
            parts.append(f"flex {v:.2f}x (goal <= 0.55x: {'MET' if v <= 0.55 else 'NOT MET'})")
            if "realtime" in by:
                w = by["flex"]["wall_s"] / by["realtime"]["wall_s"]
                parts.append(f"flex wall {w:.2f}x batchain realtime's")
        if "flex_batch" in by and by["flex_batch"]["vs_abatch"] is not None:
            v = by["flex_batch"]["vs_abatch"]
            parts.append(
                f"flex with flex_fallback=batch {v:.2f}x ({'MET' if v <= 0.55 else 'NOT MET'}, but its"
                " non-flex calls wait a batch's turnaround)"
            )
        accounted = all(
            r["accounted_usd"] is None or abs(r["accounted_usd"] - r["billed_usd"]) < Decimal("0.000001")
            for r in by.values()
        )
        parts.append("batchain's own accounting equals the ledger" + ("" if accounted else ": NO"))
        out.append(f"{label}: " + "; ".join(parts) + ".")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--dup", type=float, default=0.2)
    ap.add_argument("--system-tokens", type=int, nargs="+", default=[480, 6000])
    ap.add_argument("--only", default=",".join(CLIENTS))
    ap.add_argument("--latency-ms", type=float, default=300.0)
    ap.add_argument("--flex-latency-ms", type=float, default=600.0)
    ap.add_argument("--batch-s", type=float, default=2.0)
    args = ap.parse_args()
    clients = [c for c in args.only.split(",") if c]
    rows: list[dict[str, Any]] = []
    for tokens in args.system_tokens:
        rows += workload(f"~{tokens}-token system prompt", tokens, args, clients)
    table = {
        "title": (
            f"Billed cost of the reference workload: {args.n} inputs ({args.dup:.0%} repeats), "
            f"3 stages ({OPENAI_MODEL}, {ANTHROPIC_MODEL}, {OPENAI_MODEL}) with a shared system prompt; "
            f"sandbox ledger priced by this script; goals: batchain batch <= 0.30x abatch, flex <= 0.55x"
        ),
        "columns": [
            "workload",
            "client",
            "succeeded",
            "wall s",
            "wall vs abatch",
            "billed USD",
            "vs abatch",
            "batchain's own USD",
            "requests by tier",
            "cache read tok",
            "cache write tok",
            "billed twice",
        ],
        "rows": [
            [
                r["workload"],
                r["client"],
                f"{r['ok']}/{args.n}",
                fmt(r["wall_s"], 1),
                "-" if r["wall_vs_abatch"] is None else f"{r['wall_vs_abatch']:.2f}x",
                f"{r['billed_usd']:.6f}",
                "-" if r["vs_abatch"] is None else f"{r['vs_abatch']:.2f}x",
                "-" if r["accounted_usd"] is None else f"{r['accounted_usd']:.6f}",
                ", ".join(f"{k} {v}" for k, v in sorted(r["requests"].items())),
                r["cache_read"],
                r["cache_write"],
                r["billed_twice"],
            ]
            for r in rows
        ],
    }
    save(
        "cost",
        "The reference workload's cost: LangChain abatch against batchain's modes (issue 15)",
        "python bench/bench_cost.py " + " ".join(sys.argv[1:]),
        [table],
        notes=goal_notes(rows) + NOTES,
        raw=[
            {**r, "billed_usd": str(r["billed_usd"]), "accounted_usd": str(r["accounted_usd"])} for r in rows
        ],
    )


if __name__ == "__main__":
    main()
