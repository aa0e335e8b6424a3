"""A two-stage chain for the crash tests; the sandbox URL comes from the environment."""

import os

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_openai import ChatOpenAI

model = ChatOpenAI(
    model="gpt-4o-mini",
    api_key="sk-test-crash",
    base_url=os.environ["CRASH_OPENAI_BASE_URL"],
)
summary = ChatPromptTemplate.from_template("Summarise item {n}") | model | StrOutputParser()
title = ChatPromptTemplate.from_template("Title for: {summary}") | model | StrOutputParser()
chain = RunnablePassthrough.assign(summary=summary) | RunnablePassthrough.assign(title=title)
