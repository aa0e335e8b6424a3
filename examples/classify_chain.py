"""Classify news headlines: ``prompt | ChatOpenAI | StrOutputParser``.

Run it over the bundled headlines, against the local sandbox (free) or the real API::

    batchain sandbox serve &                       # prints the two export lines below
    export OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sk-sandbox
    batchain run examples/classify_chain.py:chain src/batchain/data/headlines.jsonl -o labels.jsonl

Each input is a dict with a ``headline`` field (other fields, like ``id``, are ignored by
the prompt and carried into the results). The model, endpoint and key come from the
environment: ``BATCHAIN_EXAMPLE_MODEL`` (default gpt-4o-mini), ``OPENAI_BASE_URL``,
``OPENAI_API_KEY``.
"""

from __future__ import annotations

import os

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

__all__ = ["LABELS", "chain", "model", "prompt"]

LABELS = ("tech", "business", "entertainment", "sports", "other")

prompt = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a careful news editor."),
        (
            "human",
            "Classify the news headline into one of: " + ", ".join(LABELS) + ". "
            "Answer with the label only.\n\nHeadline: {headline}",
        ),
    ]
)

# base_url None lets the SDK read OPENAI_BASE_URL (and fall back to api.openai.com)
model = ChatOpenAI(
    model=os.environ.get("BATCHAIN_EXAMPLE_MODEL", "gpt-4o-mini"),
    base_url=os.environ.get("OPENAI_BASE_URL") or None,
    temperature=0,
    max_completion_tokens=16,
)

chain = prompt | model | StrOutputParser()
