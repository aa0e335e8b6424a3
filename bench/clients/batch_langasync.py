"""langasync 0.2.3 against the sandbox, one phase per process. Prints one JSON line.

Runs with the langasync venv made by bench/setup_langasync.sh (not the project's venv).
Settings are passed explicitly (``LangasyncSettings(...)``, teardown §6.1) and the process
runs in a fresh directory, so no ``.env`` or stray env var steers it.

    submit  --base-url U --n N --storage D      batch_chain(chain).submit(inputs): timed
    collect --base-url U --n N --storage D --job-id J
                                                BatchJobService.get(J).get_results(): timed
                                                (run only after the sandbox batch has ended)
    cost    --base-url U --n N --storage D --variant flat|lambda|manual
                                                the 3-stage chain, untimed:
      flat    stage0 | stage1 | stage2 as one LCEL sequence (what batchain is given)
      lambda  stage0 | RunnableLambda(stages 1-2): langasync batches stage 0's model and
              runs the rest as its post-processing, per item, after the batch ends
      manual  three langasync jobs chained by hand (submit, wait, feed the outputs on)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_chains import API_KEY, Meter, emit, inputs, single_stage, stage


def settings(args: argparse.Namespace) -> Any:
    from langasync import LangasyncSettings

    return LangasyncSettings(
        openai_base_url=args.base_url,  # includes /v1
        openai_api_key=API_KEY,
        batch_poll_interval=0.05,
        base_storage_path=args.storage,
    )


async def wait_results(handle: Any, poll: float = 0.05) -> Any:
    """Poll one handle until its batch is terminal (untimed phases only)."""
    while True:
        res = await handle.get_results()
        if res.results is not None or res.status_info.status.value in ("failed", "cancelled", "expired"):
            return res
        await asyncio.sleep(poll)


def count_ok(results: list[Any] | None) -> int:
    return sum(isinstance(r, str) and bool(r) for r in results or [])


def distinct(results: list[Any] | None) -> int:
    return len({r for r in results or [] if isinstance(r, str)})


# -- the "lambda" variant's post-processing: stages 1 and 2 run realtime, per item ---------
# langasync cloudpickles the post-processing chain into its job file, and a ChatOpenAI
# holds locks that cannot be pickled, so the later stages are built on first use.
_BASE_URL: list[str] = []
_REST: dict[str, Any] = {}


async def _stages_1_2(text: str) -> str:
    rest = _REST.get("chain")
    if rest is None:
        rest = _REST["chain"] = stage(1, _BASE_URL[0]) | stage(2, _BASE_URL[0])
    return await rest.ainvoke(text)


async def amain(args: argparse.Namespace) -> None:
    from langasync import batch_chain
    from langasync.core.batch_service import BatchJobService

    s = settings(args)
    if args.phase == "submit":
        chain, items = single_stage(args.base_url), inputs(args.n)
        meter = Meter()
        with meter:
            handle = await batch_chain(chain, s).submit(items)
        emit({"phase": "submit", "job_id": handle.job_id, **meter.as_dict()})
    elif args.phase == "collect":
        meter = Meter()
        with meter:
            handle = await BatchJobService(s).get(args.job_id)
            res = await handle.get_results()
        emit(
            {
                "phase": "collect",
                "ok": count_ok(res.results),
                "n_outputs": len(res.results or []),
                "status": res.status_info.status.value,
                "sample": (res.results or [])[:1],
                **meter.as_dict(),
            }
        )
    elif args.variant == "flat":
        chain = stage(0, args.base_url) | stage(1, args.base_url) | stage(2, args.base_url)
        try:
            handle = await batch_chain(chain, s).submit(inputs(args.n))
        except Exception as exc:  # what a user gets for the same chain batchain runs
            emit(
                {
                    "phase": "cost",
                    "variant": "flat",
                    "ok": 0,
                    "accepted": False,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
            return
        res = await wait_results(handle)
        emit(
            {
                "phase": "cost",
                "variant": "flat",
                "accepted": True,
                "ok": count_ok(res.results),
                "status": res.status_info.status.value,
                "job_id": handle.job_id,
            }
        )
    elif args.variant == "lambda":
        from langchain_core.runnables import RunnableLambda

        _BASE_URL.append(args.base_url)
        chain = stage(0, args.base_url) | RunnableLambda(_stages_1_2)
        handle = await batch_chain(chain, s).submit(inputs(args.n))
        res = await wait_results(handle)
        emit(
            {
                "phase": "cost",
                "variant": "lambda",
                "accepted": True,
                "ok": count_ok(res.results),
                "distinct": distinct(res.results),
                "status": res.status_info.status.value,
                "job_id": handle.job_id,
                "sample": (res.results or [])[:1],
            }
        )
    else:  # manual: one langasync job per stage, outputs fed on by hand
        items: list[Any] = inputs(args.n)
        statuses = []
        for k in range(3):
            handle = await batch_chain(stage(k, args.base_url), s).submit(items)
            res = await wait_results(handle)
            statuses.append(res.status_info.status.value)
            if res.results is None:
                break
            items = list(res.results)  # a FailedLLMOutputError would go on as an input
        emit(
            {
                "phase": "cost",
                "variant": "manual",
                "accepted": True,
                "ok": count_ok(items),
                "distinct": distinct(items),
                "status": statuses,
                "sample": items[:1],
            }
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["submit", "collect", "cost"])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--storage", required=True)
    ap.add_argument("--job-id")
    ap.add_argument("--variant", choices=["flat", "lambda", "manual"], default="flat")
    args = ap.parse_args()
    logging.getLogger("langasync").setLevel(logging.WARNING)  # its INFO logs go to stderr
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
