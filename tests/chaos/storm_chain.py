"""A three-stage chain over two providers for the storm (URLs from the environment)."""

import os

from langchain_anthropic import ChatAnthropic
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_openai import ChatOpenAI

gpt = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test-storm", base_url=os.environ["CRASH_OPENAI_BASE_URL"])
claude = ChatAnthropic(
    model="claude-haiku-4-5",
    api_key="sk-test-storm",
    base_url=os.environ["CRASH_ANTHROPIC_BASE_URL"],
    max_tokens=64,
)
summary = ChatPromptTemplate.from_template("Summarise item {n}") | gpt | StrOutputParser()
title = ChatPromptTemplate.from_template("Title for: {summary}") | claude | StrOutputParser()
tag = ChatPromptTemplate.from_template("One tag for: {title}") | gpt | StrOutputParser()
chain = (
    RunnablePassthrough.assign(summary=summary)
    | RunnablePassthrough.assign(title=title)
    | RunnablePassthrough.assign(tag=tag)
)
