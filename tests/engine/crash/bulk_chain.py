"""One stage, `prompt | model | parser`: batch mode runs it on the bulk path (no task per
item). The provider is chosen by CRASH_PROVIDER (URLs from the environment)."""

import os

from langchain_anthropic import ChatAnthropic
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

if os.environ.get("CRASH_PROVIDER") == "anthropic":
    model = ChatAnthropic(
        model="claude-haiku-4-5",
        api_key="sk-test-crash",
        base_url=os.environ["CRASH_ANTHROPIC_BASE_URL"],
        max_tokens=64,
    )
else:
    model = ChatOpenAI(
        model="gpt-4o-mini", api_key="sk-test-crash", base_url=os.environ["CRASH_OPENAI_BASE_URL"]
    )
chain = ChatPromptTemplate.from_template("Summarise item {n}") | model | StrOutputParser()
