"""The engine on the in-process fake provider: realtime and batch mode, no sandbox, no HTTP.

Also the provider seam itself: a new provider is one adapter class (the ProviderAdapter
Protocol, its BatchAPI included) registered with ``batchain.register_adapter``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

import batchain
from batchain.engine.calls import BatchUnsupportedError
from batchain.providers import adapter_for
from batchain.providers.base import (
    BatchAPI,
    BatchIntent,
    Body,
    CallRequest,
    Failure,
    FailureKind,
    Identification,
    ProviderAdapter,
    ProviderBatch,
    RateInfo,
    Sent,
    call_identity,
    clean_body_json,
    key_for,
)
from batchain.providers.batch import BatchLimits, BatchView, Outcome, OutcomeKind
from batchain.providers.fake import FakeAdapter, FakeChatModel, FakeProvider
from batchain.providers.registry import register_adapter, unregister_adapter
from batchain.store import SQLiteStore, Usage

PROMPT = ChatPromptTemplate.from_template("say {x}")
PRICES = {"fake/fake-chat": {"input": 1.0, "output": 2.0}, "shout/shout-1": {"input": 1.0, "output": 2.0}}


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


def chain_for(provider: FakeProvider) -> Any:
    return PROMPT | FakeChatModel(provider=provider) | StrOutputParser()


def run(chain: Any, rows: list[Any], store: Path, mode: str, **kw: Any) -> batchain.Job:
    kw.setdefault("poll_min", 0.01)
    kw.setdefault("poll_max", 0.05)
    return batchain.run(chain, rows, mode=mode, store=store, progress=False, prices=PRICES, **kw)


ROWS = [{"x": i} for i in range(40)]
EXPECTED = [f"say {i}" for i in range(40)]


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_outputs_in_order_and_nothing_requested_twice(
    provider: FakeProvider, store_path: Path, mode: str
) -> None:
    rows = ROWS + ROWS[:10]  # repeated inputs share one call
    job = run(chain_for(provider), rows, store_path, mode)
    assert job.status == batchain.JobStatus.COMPLETED
    assert job.outputs() == EXPECTED + EXPECTED[:10]
    tier = "batch" if mode == "batch" else "realtime"
    assert len(provider.answered(tier)) == 40
    assert provider.answered() == provider.answered(tier)
    assert provider.duplicates() == {}
    if mode == "batch":
        assert len(provider.batches) == 1
        assert job.stats["rounds"] == 1 and job.stats["batches_created"] == 1
    else:
        assert provider.batches == {}
    assert job.usage.requests == 40


def test_batch_mode_keeps_rounds_of_a_two_stage_chain(provider: FakeProvider, store_path: Path) -> None:
    model = FakeChatModel(provider=provider)
    chain = PROMPT | model | StrOutputParser() | RunnableLambda(lambda s: f"again: {s}") | model
    job = run(chain | StrOutputParser(), ROWS[:10], store_path, "batch")
    assert job.outputs() == [f"again: say {i}" for i in range(10)]
    assert len(provider.batches) == 2  # one round per stage
    assert provider.duplicates() == {}


def test_a_rerun_replays_from_the_store(provider: FakeProvider, store_path: Path) -> None:
    first = run(chain_for(provider), ROWS, store_path, "batch")
    seen = len(provider.requests)
    again = run(chain_for(provider), ROWS, store_path, "realtime")
    assert again.outputs() == first.outputs() == EXPECTED
    assert len(provider.requests) == seen  # nothing sent: every call came from the store
    assert again.call_stats == {"cache": 40}


def test_a_resumed_batch_job_reattaches_to_its_provider_batch(store_path: Path) -> None:
    provider = FakeProvider(batch_polls=3)
    job = batchain.submit(
        chain_for(provider), ROWS, mode="batch", store=store_path, poll_min=0.01, prices=PRICES
    )
    assert len(provider.batches) == 1 and provider.requests == []  # at the provider, not run yet
    resumed = batchain.Job.open(job.id, store=store_path, chain=chain_for(provider))
    resumed.wait(progress=False, poll_min=0.01, poll_max=0.02, prices=PRICES)
    assert resumed.status == batchain.JobStatus.COMPLETED
    assert resumed.outputs() == EXPECTED
    assert len(provider.batches) == 1  # the resumed run created no new batch
    assert len(provider.answered("batch")) == 40 and provider.duplicates() == {}


def test_transient_failures_are_retried_and_permanent_ones_fail_the_item(
    provider: FakeProvider, store_path: Path
) -> None:
    provider.fail("say 3", status=500)
    provider.fail("say 5", status=400, message="bad request")
    job = run(chain_for(provider), ROWS[:8], store_path, "batch")
    statuses = [r.status.value for r in job.results()]
    assert statuses == ["succeeded"] * 5 + ["failed"] + ["succeeded"] * 2
    err = job.errors()[0].error
    assert err is not None and err["type"] == "BatchCallError" and "bad request" in err["message"]
    assert job.stats["calls_requeued"] == 1
    assert len(provider.batches) == 2  # the retried call went in the next round
    assert provider.duplicates() == {}

    retried = job.retry(progress=False, poll_min=0.01, prices=PRICES)
    assert retried.outputs() == [f"say {i}" for i in range(8)]
    assert len(provider.answered()) == 8  # only the failed call was sent again


def test_realtime_failures_are_retried(provider: FakeProvider, store_path: Path) -> None:
    provider.fail("say 2", status=503)
    job = run(chain_for(provider), ROWS[:4], store_path, "realtime")
    assert job.outputs() == EXPECTED[:4]
    assert [r.status for r in provider.requests].count(503) == 1
    assert provider.duplicates() == {}


def test_a_lost_create_answer_is_reconciled_not_resubmitted(provider: FakeProvider, store_path: Path) -> None:
    provider.lose_create_answers = 1
    job = run(chain_for(provider), ROWS, store_path, "batch")
    assert job.outputs() == EXPECTED
    assert len(provider.batches) == 1  # found at the provider by its uid, never created twice
    assert provider.duplicates() == {}


def test_a_refused_create_is_retried(provider: FakeProvider, store_path: Path) -> None:
    provider.refuse_creates = 1
    job = run(chain_for(provider), ROWS[:5], store_path, "batch")
    assert job.outputs() == EXPECTED[:5]
    assert len(provider.batches) == 1


def test_batches_split_under_the_size_limit(provider: FakeProvider, store_path: Path) -> None:
    job = run(chain_for(provider), ROWS, store_path, "batch", max_batch_size=15)
    assert job.outputs() == EXPECTED
    assert sorted(len(b.entries) for b in provider.batches.values()) == [10, 15, 15]


def test_the_fake_model_answers_outside_a_job(provider: FakeProvider) -> None:
    assert chain_for(provider).invoke({"x": "hi"}) == "say hi"
    assert [r.tier for r in provider.requests] == ["direct"]


# -- the registry ------------------------------------------------------------------------------


def test_the_registry_looks_adapters_up_by_mro() -> None:
    class Sub(FakeChatModel):
        pass

    assert isinstance(adapter_for(FakeChatModel()), FakeAdapter)
    assert adapter_for(Sub()) is adapter_for(FakeChatModel())
    own = FakeAdapter(name="sub")
    register_adapter(Sub, own)
    try:
        assert adapter_for(Sub()) is own
        assert adapter_for(FakeChatModel()) is not own
    finally:
        unregister_adapter(Sub)
    assert adapter_for(Sub()) is adapter_for(FakeChatModel())


def test_register_adapter_checks_what_it_is_given() -> None:
    with pytest.raises(TypeError, match="BaseChatModel"):
        batchain.register_adapter(dict, FakeAdapter())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"missing: .*batch_api"):
        batchain.register_adapter(FakeChatModel, object())  # type: ignore[arg-type]


def test_register_adapter_is_public_and_import_batchain_stays_light() -> None:
    assert "register_adapter" in batchain.__all__
    assert batchain.register_adapter is register_adapter
    code = "import sys, batchain; print(sorted(m for m in sys.modules if m.startswith('langchain')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- a newcomer provider, written against the Protocols alone ----------------------------------


class ShoutModel(BaseChatModel):
    """Another provider's chat model: answers in capitals."""

    @property
    def _llm_type(self) -> str:
        return "shout"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=shout(messages)))])


def shout(messages: list[BaseMessage]) -> str:
    return str(messages[-1].content).upper()


class ShoutBatchAPI:
    """An in-memory Batch API: each batch ends by its first poll."""

    limits = BatchLimits(max_requests=1000, max_bytes=1 << 20)
    identification = Identification.METADATA  # its batches carry their uid

    def __init__(self) -> None:
        self.batches: dict[str, tuple[str, list[tuple[str, str]]]] = {}

    def custom_id(self, nonce: str, key: str) -> str:
        return key

    def encode(self, custom_id: str, request: CallRequest) -> bytes:
        return f"{custom_id}\t{request.body['text']}".encode()

    def split_key(self, request: CallRequest) -> str:
        return ""

    async def create(
        self, client: Any, uid: str, job_id: str, lines: list[bytes], requests: list[CallRequest]
    ) -> ProviderBatch:
        entries = [tuple(line.decode().split("\t", 1)) for line in lines]
        batch_id = f"shout-{len(self.batches)}"
        self.batches[batch_id] = (uid, [(k, t) for k, t in entries])
        return ProviderBatch(batch_id, n_requests=len(lines), metadata={"uid": uid})

    async def retrieve(self, client: Any, provider_id: str) -> BatchView:
        n = len(self.batches[provider_id][1])
        return BatchView(ended=True, status="ended", done=n, total=n, output_ref=provider_id)

    async def outcomes(self, client: Any, view: BatchView, keys: list[str]) -> list[Outcome]:
        assert view.output_ref is not None
        return [
            Outcome(key, OutcomeKind.SUCCEEDED, text.upper(), 200)
            for key, text in self.batches[view.output_ref][1]
        ]

    async def cancel(self, client: Any, provider_id: str) -> None:
        pass

    async def find_created(self, client: Any, intent: BatchIntent) -> list[ProviderBatch]:
        for batch_id, (uid, entries) in self.batches.items():
            if uid == intent.uid:
                return [ProviderBatch(batch_id, n_requests=len(entries))]
        return []


class ShoutAdapter:
    name = "shout"
    batchable = True

    def __init__(self) -> None:
        self.api = ShoutBatchAPI()
        self.sent: list[str] = []

    def build(
        self, model: BaseChatModel, messages: list[BaseMessage], stop: Any, kwargs: dict[str, Any], salt: str
    ) -> CallRequest:
        body = {"text": str(messages[-1].content)}
        identity = call_identity(self.name, "local", "/shout", salt)
        key = key_for(identity, clean_body_json(body))
        return CallRequest(self.name, "/shout", "shout-1", body, "shout|local", key, 1, identity=identity)

    def client(self, model: BaseChatModel) -> Any:
        return None

    def job_client(self, client: Any, max_connections: int) -> Any:
        return client

    async def send(self, model: BaseChatModel, client: Any, request: CallRequest, timeout: float) -> Sent:
        self.sent.append(str(request.body["text"]))
        return Sent(str(request.body["text"]).upper(), {})

    def parse(self, model: BaseChatModel, request: CallRequest, body: Body) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=str(body)))])

    def usage(self, body: Body) -> Usage:
        return Usage(requests=1)

    def classify(self, exc: BaseException) -> Failure:
        return Failure(FailureKind.OTHER, str(exc))

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None:
        return None

    def batch_api(self) -> BatchAPI:
        return self.api


@pytest.fixture
def shout_adapter() -> Iterator[ShoutAdapter]:
    adapter = ShoutAdapter()
    checked: ProviderAdapter = adapter  # it implements the Protocol (checked by mypy)
    batchain.register_adapter(ShoutModel, checked)
    try:
        yield adapter
    finally:
        unregister_adapter(ShoutModel)


def test_a_new_provider_runs_batch_mode_once_registered(store_path: Path) -> None:
    chain = PROMPT | ShoutModel() | StrOutputParser()
    with pytest.raises(BatchUnsupportedError, match="ShoutModel"):
        run(chain, ROWS[:3], store_path, "batch")  # not registered: no Batch API
    adapter = ShoutAdapter()
    batchain.register_adapter(ShoutModel, adapter)
    try:
        job = run(chain, ROWS[:20], store_path, "batch", job_id="shout-job")
    finally:
        unregister_adapter(ShoutModel)
    assert job.outputs() == [f"SAY {i}" for i in range(20)]
    assert len(adapter.api.batches) == 1
    (_uid, entries) = next(iter(adapter.api.batches.values()))
    assert [text for _key, text in entries] == [f"say {i}" for i in range(20)]
    with SQLiteStore(store_path) as st:
        (batch,) = st.job_batches("shout-job")
        assert batch.provider_batch_id == "shout-0"


def test_a_new_provider_runs_realtime_through_its_adapter(
    shout_adapter: ShoutAdapter, store_path: Path
) -> None:
    chain = PROMPT | ShoutModel() | StrOutputParser()
    job = run(chain, ROWS[:5], store_path, "realtime")
    assert job.outputs() == [f"SAY {i}" for i in range(5)]
    assert shout_adapter.sent == [f"say {i}" for i in range(5)]
    assert shout_adapter.api.batches == {}


def test_an_input_limit_caps_the_requests_of_a_batch_that_are_not_embeddings(
    shout_adapter: ShoutAdapter, store_path: Path
) -> None:
    """A request that is not an embeddings request carries one input: a Batch API's input
    limit below its request limit caps how many requests go in one batch."""
    shout_adapter.api.limits = BatchLimits(max_requests=1000, max_bytes=1 << 20, max_inputs=7)
    job = run(PROMPT | ShoutModel() | StrOutputParser(), ROWS[:20], store_path, "batch")
    assert job.outputs() == [f"SAY {i}" for i in range(20)]
    assert sorted(len(entries) for _, entries in shout_adapter.api.batches.values()) == [6, 7, 7]
