"""Two rounds over two providers for the batch crash tests (URLs from the environment)."""

import os

from langchain_anthropic import ChatAnthropic
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_openai import ChatOpenAI

gpt = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test-crash", base_url=os.environ["CRASH_OPENAI_BASE_URL"])
claude = ChatAnthropic(
    model="claude-haiku-4-5",
    api_key="sk-test-crash",
    base_url=os.environ["CRASH_ANTHROPIC_BASE_URL"],
    max_tokens=64,
)
first = ChatPromptTemplate.from_template("Summarise item {n}") | gpt | StrOutputParser()
second = ChatPromptTemplate.from_template("Title for: {summary}") | claude | StrOutputParser()
chain = RunnablePassthrough.assign(summary=first) | RunnablePassthrough.assign(title=second)
