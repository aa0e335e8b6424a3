"""Gemini embeddings on the wire: ``embedContent``, ``batchEmbedContents`` and the items of
an ``asyncBatchEmbedContent`` batch.

google-genai's ``models.embed_content`` (Developer API) always calls
``batchEmbedContents``: ``{"requests": [{"model", "content", "taskType", "title",
"outputDimensionality"}]}``, answered ``{"embeddings": [{"values": [...]}]}``.
``embedContent`` (and each batch item) is one such request, answered
``{"embedding": {"values": [...]}}``. The Developer API documents no usage in these
answers, so none is sent; the ledger still bills each request its input tokens (the
sandbox tokenizer's count of its texts). Vectors are the OpenAI sandbox's deterministic
unit vectors, of the model's dimensions or ``outputDimensionality``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchain.sandbox.calls import Evaluated, Usage
from batchain.sandbox.errors import ApiError
from batchain.sandbox.gemini.generate import GeminiSpec
from batchain.sandbox.gemini.request import model_id
from batchain.sandbox.openai.embeddings import embedding
from batchain.sandbox.prompt import Message, Prompt
from batchain.sandbox.tokenizer import count_tokens

if TYPE_CHECKING:
    from batchain.sandbox.ledger import Tier
    from batchain.sandbox.state import SandboxState

__all__ = ["GeminiEmbeddingsSpec"]

#: each model's native dimensions (a model not listed has 3,072)
DIMENSIONS = {"gemini-embedding-001": 3072, "text-embedding-004": 768, "embedding-001": 768}
#: most requests in one ``batchEmbedContents``, as Google's limit
MAX_REQUESTS = 100


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, code="INVALID_ARGUMENT")


def _requests(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body's embed requests: ``requests`` (batchEmbedContents) or the body itself."""
    if "requests" not in body:
        return [body]
    raw = body["requests"]
    if not isinstance(raw, list) or not raw:
        raise _invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n")
    if len(raw) > MAX_REQUESTS:
        raise _invalid(f"* BatchEmbedContentsRequest.requests: at most {MAX_REQUESTS} requests are allowed\n")
    if not all(isinstance(r, dict) for r in raw):
        raise _invalid("Invalid JSON payload received. 'requests' must hold objects.")
    return raw


def _text(request: dict[str, Any]) -> str:
    content = request.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise _invalid("* EmbedContentRequest.content: contents is not specified\n")
    texts = [p.get("text") for p in parts if isinstance(p, dict)]
    if len(texts) != len(parts) or not all(isinstance(t, str) for t in texts):
        raise _invalid("* EmbedContentRequest.content.parts: only text parts can be embedded\n")
    return "".join(t for t in texts if isinstance(t, str))


def _dimensions(request: dict[str, Any], model: str) -> int:
    dims = request.get("outputDimensionality")
    if dims is None:
        return DIMENSIONS.get(model, 3072)
    if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
        raise _invalid("* EmbedContentRequest.output_dimensionality: must be a positive integer\n")
    return dims


def parse_embeddings(body: dict[str, Any]) -> Prompt:
    """Validate an embeddings body (``model`` set by the route); the Prompt carries the
    texts as one user message."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("* EmbedContentRequest.model: model is not specified\n")
    texts = []
    for request in _requests(body):
        inner = request.get("model")
        if inner is not None and model_id(str(inner)) != model_id(model):
            raise _invalid(f"Model {inner} does not match the model of the call, {model}.")
        _dimensions(request, model_id(model))
        texts.append(_text(request))
    return Prompt(model=model_id(model), messages=[Message(role="user", text="\n".join(texts))], max_tokens=1)


class GeminiEmbeddingsSpec(GeminiSpec):
    """Gemini's errors, auth and limits, an embeddings body and answer."""

    def parse(self, body: dict[str, Any], *, batch: bool) -> Prompt:
        del batch  # a batch item is one EmbedContentRequest
        return parse_embeddings(body)

    def usage(self, state: SandboxState, ev: Evaluated) -> Usage:
        del state
        return Usage(sum(count_tokens(_text(r)) for r in _requests(ev.body)), 0, 0, 0)

    def success_body(self, ev: Evaluated, usage: Usage, tier: Tier) -> dict[str, Any]:
        del usage, tier  # no usage on the wire (see the module docstring)
        model = ev.prompt.model
        vectors = [{"values": embedding(model, _text(r), _dimensions(r, model))} for r in _requests(ev.body)]
        if "requests" in ev.body:
            return {"embeddings": vectors}
        return {"embedding": vectors[0]}
