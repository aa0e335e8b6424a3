"""Provider queues as resources, per model: what a job has open at the provider, what may
go next, and what a refusal for size or queue teaches. Pure decisions, no I/O: the batch
coordinator (:mod:`batchain.engine.batching`) asks before each create and acts on the
answers.

- **Caps.** ``max_open_batches`` and ``max_enqueued_tokens`` per model (run options; None:
  no cap of ours), and the caps learned from the provider's refusals during the run. A
  model is a lane (provider, base URL, model). Calls beyond a cap wait, unsubmitted, and
  go when one of the model's batches ends.
- **Enqueued tokens** are what a provider queues per model: the input tokens of its
  batches not yet ended. A call's are estimated cheaply from its request's texts
  (:func:`batchain.cost.tokens.approx_input_tokens`).
- **Refusals** (:class:`~batchain.providers.batch.Refusal`) never count against a call's
  retries. Too large (bytes or requests): the batch goes again in halves, and the lane's
  batches stay that small. Queue full while other batches of the model are open: its calls
  wait until one of them ends, and the lane learns a cap (the limit the provider stated,
  else what was open). Queue full with nothing else of ours open: split in halves. A
  rate limit on creating batches: wait a while (backing off), then create again.
- **Progress.** A lane with nothing open always admits at least one call, so a wait
  never lasts for good; only a request refused alone, with nothing of ours open, over a
  limit it cannot fit, fails. Refusals that wait a while (a 429 on create, a queue held
  by others' work) end too: after :data:`LATER_TRIES` in a row with nothing of the job
  open for the model, the job is paused (nothing is lost; a resume tries again).

Learned caps live as long as the run: a new run starts from the options again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from batchain.cost.tokens import approx_input_tokens
from batchain.providers.base import CallRequest
from batchain.providers.batch import BatchLimits, Refusal, RefusalKind

__all__ = ["LATER_TRIES", "Action", "Capacity", "Decision", "Size", "enqueued_tokens"]

#: refusals in a row that wait a while, with nothing of the job open for the model, before
#: the job is paused instead (with back-off from 1 s to 60 s: about 3 minutes)
LATER_TRIES = 8


def enqueued_tokens(request: CallRequest) -> int:
    """The input tokens ``request`` holds in its model's queue, estimated from its texts
    (by its builder, or from its body here)."""
    known = request.queued_tokens
    return known if known is not None else approx_input_tokens(request.body)


class Action(StrEnum):
    """What becomes of the calls of a batch the provider refused for its size or queue."""

    #: send them again now, in smaller batches (the lane learned a smaller size)
    SPLIT = "split"
    #: wait, unsubmitted, until one of the model's open batches ends
    WAIT = "wait"
    #: wait :attr:`Decision.delay` seconds, then send them again
    LATER = "later"
    #: the batch was one request, refused alone: over the limit on its own, it fails
    FAIL = "fail"
    #: waiting a while did not help, and nothing of the job is open for the model to wait
    #: for: pause the job (its calls stay pending; a resume tries again)
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    #: one line for the log (and, for FAIL, the call's error)
    why: str
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Size:
    """A batch's size: requests, estimated enqueued tokens, and bytes on the wire."""

    requests: int
    tokens: int
    bytes: int = 0
    #: False when some of its calls' requests were not at hand (a batch an earlier run
    #: left open, re-attached by key alone): ``tokens`` counts only the others
    counted: bool = True


@dataclass(slots=True)
class _Lane:
    open: dict[str, Size] = field(default_factory=dict)
    #: learned from refusals: enqueued tokens and queued requests the queue holds
    tokens_cap: int | None = None
    requests_cap: int | None = None
    #: learned from refusals: requests and bytes one batch may hold
    batch_requests: int | None = None
    batch_bytes: int | None = None
    #: refused for the queue while others were open: nothing goes until one of them ends
    blocked: bool = False
    #: refused creates in a row that wait a while (the back-off's exponent), and until when
    #: (monotonic seconds) nothing of the lane is created
    streak: int = 0
    not_before: float = 0.0
    #: calls held back at the last flush (a change is logged, a repeat is not)
    held: int = 0

    def tokens(self) -> int:
        return sum(s.tokens for s in self.open.values())

    def requests(self) -> int:
        return sum(s.requests for s in self.open.values())


def _least(*caps: int | None) -> int | None:
    known = [c for c in caps if c is not None]
    return min(known) if known else None


class Capacity:
    """Every lane's open batches and caps, for one run."""

    def __init__(
        self,
        *,
        max_open_batches: int | None = None,
        max_enqueued_tokens: int | None = None,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self.max_open_batches = max_open_batches
        self.max_enqueued_tokens = max_enqueued_tokens
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._lanes: dict[str, _Lane] = {}
        #: which lane each open batch is in
        self._lane_of: dict[str, str] = {}

    def _lane(self, lane: str) -> _Lane:
        found = self._lanes.get(lane)
        if found is None:
            found = self._lanes[lane] = _Lane()
        return found

    # -- what is open ---------------------------------------------------------------------

    def opened(self, uid: str, lane: str, size: Size) -> None:
        """A batch was created (or may have been, while that is verified)."""
        state = self._lane(lane)
        state.open[uid] = size
        state.streak = 0
        self._lane_of[uid] = lane

    def hold(self, uid: str, lane: str, tokens: int | None, *, requests: int = 1) -> None:
        """``requests`` more calls (one, as it is re-attached) of a batch an earlier run left
        open (``tokens`` None when their requests are not at hand)."""
        state = self._lane(lane)
        had = state.open.get(uid, Size(0, 0))
        counted = had.counted and tokens is not None
        state.open[uid] = Size(had.requests + requests, had.tokens + (tokens or 0), had.bytes, counted)
        self._lane_of[uid] = lane

    def closed(self, uid: str) -> Size | None:
        """A batch ended (collected, refused, lost or abandoned): its room is free again.
        Returns its size (None: it was not open)."""
        lane = self._lane_of.pop(uid, None)
        if lane is None:
            return None
        state = self._lanes[lane]
        state.blocked = False
        state.streak = 0  # room was freed: refusals that wait a while are counted afresh
        return state.open.pop(uid, None)

    # -- what may go ----------------------------------------------------------------------

    def limits(self, lane: str, base: BatchLimits) -> BatchLimits:
        """The provider's per-batch limits, lowered by what its refusals taught."""
        state = self._lanes.get(lane)
        if state is None:
            return base
        return BatchLimits(
            _least(base.max_requests, state.batch_requests) or base.max_requests,
            _least(base.max_bytes, state.batch_bytes) or base.max_bytes,
            base.max_inputs,
        )

    def too_large(self, tokens: int) -> str | None:
        """Why one call can never go under ``max_enqueued_tokens`` (None: it can)."""
        cap = self.max_enqueued_tokens
        if cap is None or tokens <= cap:
            return None
        return f"the request needs about {tokens:,} enqueued tokens, more than max_enqueued_tokens={cap:,}"

    def ready_in(self, lane: str, now: float) -> float:
        """Seconds until ``lane`` may create again after a refusal that waits a while."""
        state = self._lanes.get(lane)
        return max(0.0, state.not_before - now) if state else 0.0

    def can_open(self, lane: str, now: float) -> bool:
        """Whether a new batch of ``lane`` may be created now (before sizing it)."""
        state = self._lanes.get(lane)
        if state is None:
            return True
        if state.not_before > now:
            return False
        if not state.open:
            return True
        if state.blocked:
            return False
        return self.max_open_batches is None or len(state.open) < self.max_open_batches

    def admit(self, lane: str, tokens: Sequence[int], now: float) -> list[int]:
        """Which calls (by index; their enqueued ``tokens``, in order) one new batch of
        ``lane`` may hold now: each that still fits, so one large call does not hold the
        smaller ones behind it. The rest wait. At least one when nothing is open."""
        if not self.can_open(lane, now):
            return []
        state = self._lane(lane)
        tokens_cap = _least(self.max_enqueued_tokens, state.tokens_cap)
        requests_cap = state.requests_cap
        if tokens_cap is None and requests_cap is None:
            return list(range(len(tokens)))
        used_tokens, used_requests = state.tokens(), state.requests()
        room = (requests_cap - used_requests) if requests_cap is not None else len(tokens)
        chosen: list[int] = []
        for i, t in enumerate(tokens):
            if len(chosen) >= room:
                break
            if tokens_cap is None or used_tokens + t <= tokens_cap:
                used_tokens += t
                chosen.append(i)
        if not chosen and not state.open and tokens:
            return [0]  # nothing open: the provider decides, so the lane never waits for good
        return chosen

    def held(self, lane: str, n: int) -> bool:
        """Note that ``n`` calls of ``lane`` wait for capacity; True when that changed."""
        state = self._lane(lane)
        changed = n != state.held
        state.held = n
        return changed

    def describe(self, lane: str) -> str:
        """The lane's open batches and caps, in a few words."""
        state = self._lane(lane)
        words = [f"{len(state.open)} open ({state.requests():,} requests, ~{state.tokens():,} tokens)"]
        if self.max_open_batches is not None:
            words.append(f"max_open_batches={self.max_open_batches}")
        tokens_cap = _least(self.max_enqueued_tokens, state.tokens_cap)
        if tokens_cap is not None:
            words.append(f"cap ~{tokens_cap:,} enqueued tokens")
        if state.requests_cap is not None:
            words.append(f"cap {state.requests_cap:,} queued requests")
        return ", ".join(words)

    # -- refusals -------------------------------------------------------------------------

    def refused(
        self, lane: str, size: Size, refusal: Refusal, now: float, retry_after: float | None = None
    ) -> Decision:
        """The provider refused a batch of ``lane`` (already closed here) of ``size``."""
        state = self._lane(lane)
        decision = self._decide(state, size, refusal)
        if decision.action is Action.LATER:
            state.streak += 1
            delay = min(self.backoff_max, self.backoff_min * 2 ** (state.streak - 1))
            delay = max(delay, retry_after or 0.0)
            state.not_before = now + delay
            if state.streak > LATER_TRIES and not state.open:
                why = f"{decision.why}, {LATER_TRIES} times in a row with nothing of this job open for it"
                return Decision(Action.PAUSE, f"{why}: {refusal.message}; resume the job later", delay)
            return Decision(Action.LATER, f"{decision.why}; trying again in {delay:.3g} s", delay)
        return decision

    def _decide(self, state: _Lane, size: Size, refusal: Refusal) -> Decision:
        kind = refusal.kind
        if kind is RefusalKind.RATE:
            return Decision(Action.LATER, "creating batches is rate-limited")
        if kind.queue:
            return self._queue_full(state, size, refusal)
        if size.requests <= 1:
            why = f"the request alone is over the provider's batch size limit: {refusal.message}"
            return Decision(Action.FAIL, why)
        half = (size.requests + 1) // 2
        if kind is RefusalKind.REQUESTS:
            stated = refusal.limit if refusal.limit is not None and refusal.limit < size.requests else None
            state.batch_requests = _least(state.batch_requests, stated or half)
            why = f"too many requests; batches of at most {state.batch_requests:,} now"
            return Decision(Action.SPLIT, why)
        state.batch_bytes = _least(state.batch_bytes, max(1, size.bytes // 2))
        return Decision(Action.SPLIT, f"too large; batches of at most {state.batch_bytes:,} bytes now")

    def _queue_full(self, state: _Lane, size: Size, refusal: Refusal) -> Decision:
        by_tokens = refusal.kind is RefusalKind.QUEUED_TOKENS
        unit = "enqueued tokens" if by_tokens else "queued requests"
        if state.open:
            # what is open was accepted: keep at most that (or the stated limit) queued
            held = state.tokens() if by_tokens else state.requests()
            self._learn(state, by_tokens, refusal.limit if refusal.limit is not None else held)
            state.blocked = True
            return Decision(
                Action.WAIT,
                f"the queue is full; waiting until one of the {len(state.open)} open batches of "
                f"the model ends (cap ~{self._cap(state, by_tokens):,} {unit})",
            )
        own = size.tokens if by_tokens else size.requests
        if by_tokens and not size.counted:
            # its size is not known (an earlier run's batch): learn only what was stated;
            # sent again, its calls are counted, and a second refusal halves them
            self._learn(state, by_tokens, refusal.limit)
            return Decision(Action.SPLIT, "the queue cannot take it whole; sending it again, counted")
        if size.requests <= 1:
            if refusal.limit is not None and own <= refusal.limit:
                # it fits the queue alone: other work holds the queue (another job, another
                # process of the organisation); wait for it, backing off
                return Decision(Action.LATER, "the queue is held by work other than this job's")
            why = f"refused alone, with nothing else of this job queued: {refusal.message}"
            return Decision(Action.FAIL, why)
        self._learn(state, by_tokens, _least(refusal.limit, max(1, own // 2)))
        return Decision(
            Action.SPLIT,
            f"the queue cannot take it whole; splitting (cap ~{self._cap(state, by_tokens):,} {unit})",
        )

    def _learn(self, state: _Lane, by_tokens: bool, cap: int | None) -> None:
        if by_tokens:
            state.tokens_cap = _least(state.tokens_cap, cap)
        else:
            state.requests_cap = _least(state.requests_cap, cap)

    def _cap(self, state: _Lane, by_tokens: bool) -> int:
        cap = _least(self.max_enqueued_tokens, state.tokens_cap) if by_tokens else state.requests_cap
        return cap or 0
