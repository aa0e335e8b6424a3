"""One stage whose long system prompt (over claude-haiku-4-5's 4,096-token cache minimum)
every item shares: batch mode primes Anthropic's prompt cache with it. URL from the
environment (CRASH_ANTHROPIC_BASE_URL)."""

import os

from langchain_anthropic import ChatAnthropic
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

LONG = "Follow the house style guide for every answer you give. " * 600  # ~6,600 tokens

model = ChatAnthropic(
    model="claude-haiku-4-5",
    api_key="sk-test-crash",
    base_url=os.environ["CRASH_ANTHROPIC_BASE_URL"],
    max_tokens=64,
)
prompt = ChatPromptTemplate.from_messages([("system", LONG), ("human", "Item {n}: summarize it")])
chain = prompt | model | StrOutputParser()
