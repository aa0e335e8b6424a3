"""Settling a batch create whose answer was lost: did the provider get it, and which batch is it?

A batch's intent is recorded before the provider is asked to create it, and its provider id
right after. A crash in between, or a create that raised, leaves the intent open: the
create may or may not have reached the provider. It is settled with certainty, or not yet:

- Where a provider batch carries the intent's uid (:attr:`Identification.METADATA`: OpenAI,
  the fake), the batch found is ours, and none found means the create never happened.
- Where nothing but its requests names a batch (:attr:`Identification.RESULTS`: Anthropic),
  the provider's batches that could be it (created in the intent's window, of its size,
  owned by no batch of the store) are only candidates. Each is polled until it ends (never
  cancelled) and its results are read: one is ours when they carry the custom ids of the
  intent's calls, which carry the intent's nonce; one that does not is ruled out. When
  every candidate is ruled out, the create never happened.

Nothing here is stored: a run that dies while verifying leaves the intent open, and the
next run lists the same window again (the verdicts are facts about the provider, so they
come out the same).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from batchain._failpoints import failpoint
from batchain.providers.base import BatchAPI, BatchIntent, Identification
from batchain.providers.batch import BatchView, Outcome
from batchain.store.base import Store

__all__ = ["CREATE_WINDOW_S", "Verdict", "Verification"]

log = logging.getLogger("batchain.engine.reconcile")

#: the longest after its intent is recorded that a create can reach the provider: one
#: request (Anthropic's goes without SDK retries) under the client's timeout, 10 minutes
#: by default. A provider batch created later than this is never taken for ours.
CREATE_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one look at the provider says about an open intent (neither field set: not
    known yet)."""

    #: the provider batch that is surely the intent's
    ours: str = ""
    #: no provider batch can be it: the create never reached the provider
    absent: bool = False
    #: a batch adopted by its results has ended: its view, and the results already read
    view: BatchView | None = None
    outcomes: list[Outcome] | None = None


_NOT_YET = Verdict()


class Verification:
    """One open intent, settled by looking at the provider (:meth:`look`, once per poll)."""

    def __init__(self, api: BatchAPI, client: Any, intent: BatchIntent, nonce: str, store: Store) -> None:
        self.api = api
        self.client = client
        self.intent = intent
        #: what the custom ids of the intent's calls carry
        self.nonce = nonce
        self.store = store
        #: provider ids that may be the intent's batch, not yet ruled out; None until listed
        self.candidates: list[str] | None = None

    @classmethod
    def of(
        cls,
        api: BatchAPI,
        client: Any,
        uid: str,
        recorded: float,
        n: int,
        nonce: str,
        store: Store,
        provider: str,
    ) -> Verification:
        """The verification of intent ``uid`` (recorded at ``recorded``, ``n`` calls)."""
        taken = frozenset(store.provider_batch_ids(provider))
        intent = BatchIntent(uid, recorded, recorded + CREATE_WINDOW_S, n, taken)
        return cls(api, client, intent, nonce, store)

    async def look(self) -> Verdict:
        """List the provider's batches (first look), or check the candidates that ended."""
        if self.candidates is None:
            return await self._list()
        for provider_id in list(self.candidates):
            view = await self._state(provider_id)
            if view is not None and not view.ended:
                continue
            if view is not None:
                keys = self.store.batch_keys(self.intent.uid)
                outcomes = await self.api.outcomes(self.client, view, keys)
                ours = {self.api.custom_id(self.nonce, k) for k in keys}
                if any(o.custom_id in ours for o in outcomes):
                    return Verdict(ours=provider_id, view=view, outcomes=outcomes)
            self.candidates.remove(provider_id)
            log.info(
                "provider batch %s is not batch %s: none of its results is one of its calls",
                provider_id,
                self.intent.uid,
            )
            failpoint("batch_ruled_out")
        return _NOT_YET if self.candidates else Verdict(absent=True)

    async def _list(self) -> Verdict:
        found = await self.api.find_created(self.client, self.intent)
        if not found:
            return Verdict(absent=True)
        if self.api.identification is Identification.METADATA:
            return Verdict(ours=found[0].id)
        self.candidates = [b.id for b in found]
        log.info(
            "batch %s: its create may have reached the provider; %d provider batch(es) of its size "
            "may be it (%s): adopting one only once its results carry the batch's custom ids",
            self.intent.uid,
            len(found),
            ", ".join(self.candidates),
        )
        return _NOT_YET

    async def _state(self, provider_id: str) -> BatchView | None:
        """A candidate's state; None when the provider no longer has it (whoever deleted it
        owned it: batchain never deletes a batch)."""
        try:
            return await self.api.retrieve(self.client, provider_id)
        except Exception as exc:
            if getattr(exc, "status_code", None) == 404:
                return None
            raise
