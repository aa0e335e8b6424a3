"""batchain leans on a few private parts of LangChain and the SDKs (the model-boundary hook,
the models' own payload builders and parsers, prompt formatting). Each is named here, so an
upstream release that moves one fails one readable test, not a speed or price silently lost.
CI runs these at the newest releases and at the lowest versions the pins admit."""

from __future__ import annotations

import importlib
from importlib.metadata import version

import pytest

pytestmark = pytest.mark.internals

#: (package, module, attribute path): every private name batchain uses
PRIVATE = [
    ("langchain-core", "langchain_core.language_models", "BaseChatModel._agenerate_with_cache"),
    ("langchain-core", "langchain_core.language_models", "BaseChatModel._generate_with_cache"),
    ("langchain-core", "langchain_core.language_models", "BaseChatModel._get_llm_string"),
    ("langchain-core", "langchain_core.prompts", "ChatPromptTemplate._merge_partial_and_user_variables"),
    ("langchain-core", "langchain_core.prompts", "BasePromptTemplate._validate_input"),
    ("langchain-core", "langchain_core.prompts.chat", "_StringImageMessagePromptTemplate.format"),
    ("langchain-core", "langchain_core.prompts.chat", "HumanMessagePromptTemplate._msg_class"),
    ("langchain-openai", "langchain_openai", "ChatOpenAI._get_request_payload"),
    ("langchain-openai", "langchain_openai", "ChatOpenAI._create_chat_result"),
    ("langchain-openai", "langchain_openai", "ChatOpenAI._use_responses_api"),
    ("langchain-anthropic", "langchain_anthropic", "ChatAnthropic._get_request_payload"),
    ("langchain-anthropic", "langchain_anthropic", "ChatAnthropic._format_output"),
    ("openai", "openai.lib._parsing._completions", "type_to_response_format_param"),
]


@pytest.mark.parametrize(("package", "module", "path"), PRIVATE, ids=[p[2] for p in PRIVATE])
def test_internals_private_names_batchain_uses_exist(package: str, module: str, path: str) -> None:
    obj: object = importlib.import_module(module)
    for part in path.split("."):
        assert hasattr(obj, part), (
            f"depends on internals: batchain uses the private {module}.{path} of {package} "
            f"{version(package)}, which has no {part!r}"
        )
        obj = getattr(obj, part)


def test_internals_openai_refusal_check_is_a_known_pass_through() -> None:
    """langchain-openai >= 1.7.4 puts ``RunnableGenerator(_check_refusal)`` between the model
    and the parser of structured output; the fast path knows it by name."""
    from langchain_core.runnables import RunnableGenerator
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    from batchain.chains.fastpath import _PASS_THROUGH_CHECKS

    class Pet(BaseModel):
        kind: str

    chain = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test").with_structured_output(  # type: ignore[arg-type]
        Pet, method="function_calling"
    )
    middle = [s for s in chain.steps if isinstance(s, RunnableGenerator)]  # type: ignore[attr-defined]
    for step in middle:
        fn = step._transform
        name = f"{fn.__module__}.{fn.__qualname__}"
        assert name in _PASS_THROUGH_CHECKS, (
            f"depends on internals: langchain-openai {version('langchain-openai')} puts an unknown "
            f"generator {name} into with_structured_output; the fast path will not take it"
        )
