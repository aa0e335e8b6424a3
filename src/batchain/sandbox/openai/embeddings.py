"""OpenAI's embeddings (``POST /v1/embeddings``), realtime and in batch lines.

Vectors are deterministic: each input's vector is drawn from a generator seeded with the
model and the input (text, or token ids), then scaled to length 1, as OpenAI's are. So the
same input always embeds the same, and different inputs differently. Dimensions are the
model's (1,536 for ``text-embedding-3-small`` and ``ada-002``, 3,072 for ``-3-large``) or
``dimensions``. Usage is ``prompt_tokens`` (the sandbox tokenizer's count of each input,
or the number of token ids given); nothing is generated, so the ledger shows no output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import time
from typing import TYPE_CHECKING, Any

from batchain.sandbox.calls import Evaluated, Usage, dumps
from batchain.sandbox.errors import ApiError
from batchain.sandbox.openai.chat import OpenAISpec, openai_json_response
from batchain.sandbox.prompt import Message, Prompt
from batchain.sandbox.tokenizer import count_tokens

if TYPE_CHECKING:
    from starlette.responses import Response

    from batchain.sandbox.ledger import Tier
    from batchain.sandbox.limits import Decision
    from batchain.sandbox.state import SandboxState

__all__ = ["EmbeddingsSpec", "embedding", "parse_embeddings"]

#: each model's native dimensions (a model not listed has 1,536)
DIMENSIONS = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536, "text-embedding-ada-002": 1536}
#: most inputs in one request, as OpenAI's limit
MAX_INPUTS = 2048


def _inputs(body: dict[str, Any]) -> list[str | list[int]]:
    raw = body.get("input")
    if raw is None:
        raise ApiError(
            400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        return [list(raw)]  # one input as token ids
    if isinstance(raw, list) and raw and len(raw) <= MAX_INPUTS:
        out: list[str | list[int]] = []
        for item in raw:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list) and all(isinstance(t, int) for t in item):
                out.append(list(item))
            else:
                raise ApiError(400, "'$.input' is invalid. Please check the API reference.", param="input")
        return out
    raise ApiError(400, "'$.input' is invalid. Please check the API reference.", param="input")


def parse_embeddings(body: dict[str, Any], *, batch: bool) -> Prompt:
    """Validate an embeddings body; the Prompt carries the inputs as one user message."""
    del batch
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter")
    inputs = _inputs(body)
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise ApiError(
            400, "Invalid value for 'dimensions': expected a positive integer.", param="dimensions"
        )
    if dims is not None and model == "text-embedding-ada-002":
        raise ApiError(400, "This model does not support specifying dimensions.", param="dimensions")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise ApiError(
            400, "Invalid value for 'encoding_format': expected 'float' or 'base64'.", param="encoding_format"
        )
    text = "\n".join(i if isinstance(i, str) else json.dumps(i) for i in inputs)
    return Prompt(model=model, messages=[Message(role="user", text=text)], max_tokens=1)


def _tokens(value: str | list[int]) -> int:
    return len(value) if isinstance(value, list) else count_tokens(value)


def embedding(model: str, value: str | list[int], dimensions: int) -> list[float]:
    """The deterministic unit vector of one input."""
    seed = hashlib.sha256(f"{model}\0{json.dumps(value, ensure_ascii=False)}".encode()).digest()
    rng = random.Random(seed)
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [round(x / norm, 7) for x in vector]


def _encoded(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


class EmbeddingsSpec(OpenAISpec):
    """``/v1/embeddings``: OpenAI's errors, auth and limits, an embeddings body."""

    def parse(self, body: dict[str, Any], *, batch: bool) -> Prompt:
        return parse_embeddings(body, batch=batch)

    def usage(self, state: SandboxState, ev: Evaluated) -> Usage:
        del state
        return Usage(sum(_tokens(v) for v in _inputs(ev.body)), 0, 0, 0)

    def success_body(self, ev: Evaluated, usage: Usage, tier: Tier) -> dict[str, Any]:
        del tier
        model = ev.prompt.model
        dims = ev.body.get("dimensions") or DIMENSIONS.get(model, 1536)
        fmt = ev.body.get("encoding_format") or "float"
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(embedding(model, value, dims), fmt)}
            for i, value in enumerate(_inputs(ev.body))
        ]
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
        }

    def success_response(
        self, ev: Evaluated, payload: dict[str, Any], decision: Decision, started: float
    ) -> Response:
        headers = {"openai-processing-ms": str(int((time.perf_counter() - started) * 1000))}
        return openai_json_response(dumps(payload), 200, headers)
