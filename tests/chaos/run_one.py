"""Child of the one-store tests: run one job (realtime or batch) over items ``offset..offset+n``."""

import os
import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

import batchain

store, job_id, n, offset, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
model = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test-one", base_url=os.environ["ONE_OPENAI_BASE_URL"])
chain = ChatPromptTemplate.from_template("Summarise item {n}") | model | StrOutputParser()
batchain.run(
    chain,
    ({"n": offset + i} for i in range(n)),
    store=store,
    job_id=job_id,
    mode=mode,
    max_concurrency=16,
    progress=False,
    poll_min=0.05,
    poll_max=0.2,
)
