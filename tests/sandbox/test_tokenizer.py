from __future__ import annotations

from batchain.sandbox.prompt import FormatKind, Message, Prompt, ResponseFormat, Tool
from batchain.sandbox.tokenizer import count_tokens, prompt_tokens, truncate_to_tokens


def test_count_tokens() -> None:
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("don't") == 3
    assert count_tokens("a\nb") == count_tokens("a") + count_tokens("b")
    assert count_tokens("héllo wörld") == 2


def test_prompt_tokens_rules() -> None:
    prompt = Prompt("m", [Message("system", "Be brief."), Message("user", "Hi there")])
    assert prompt_tokens(prompt) == 3 + (3 + 3) + (3 + 2)
    tool = Tool("get_x", "Gets x", {"type": "object"})
    with_tool = Prompt("m", [Message("user", "Hi")], tools=[tool])
    # tool: 3 + name(1) + description(2) + {"type":"object"} (9 tokens)
    assert prompt_tokens(with_tool) == 3 + 4 + 3 + 1 + 2 + 9
    schema = Prompt("m", [Message("user", "Hi")], response_format=ResponseFormat(FormatKind.JSON_SCHEMA, {}))
    assert prompt_tokens(schema) == 3 + 4 + 3 + 2
    image = Prompt("m", [Message("user", "", extra_tokens=85)])
    assert prompt_tokens(image) == 3 + 3 + 85


def test_truncate() -> None:
    assert truncate_to_tokens("one two three", 2) == ("one two", True)
    assert truncate_to_tokens("one two", 2) == ("one two", False)
    assert truncate_to_tokens("a, b", 2) == ("a,", True)
