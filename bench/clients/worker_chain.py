"""The chain the worker benchmark queues (loaded by reference in each worker process):
``prompt | gpt-4o-mini | parser`` against the sandbox at ``$BENCH_OPENAI_BASE_URL``."""

import os

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

model = ChatOpenAI(
    model="gpt-4o-mini", api_key="sk-bench-workers", base_url=os.environ["BENCH_OPENAI_BASE_URL"]
)
chain = ChatPromptTemplate.from_template("Summarise item {n} of job {job}") | model | StrOutputParser()

#: three stages, each ``prompt | gpt-4o-mini | parser`` (the batch-mode case)
three = (
    ChatPromptTemplate.from_template("Summarise item {n} of job {job}")
    | model
    | StrOutputParser()
    | ChatPromptTemplate.from_template("Shorten: {text}")
    | model
    | StrOutputParser()
    | ChatPromptTemplate.from_template("Title for: {text}")
    | model
    | StrOutputParser()
)
