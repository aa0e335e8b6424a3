from __future__ import annotations

import json
import subprocess
import sys

from batchain.sandbox.labels import find_labels, pick_label
from batchain.sandbox.prompt import FormatKind, Message, Prompt, ResponseFormat, Tool, ToolMode
from batchain.sandbox.responder import FinishReason, respond
from batchain.sandbox.schemagen import ValueSource, generate

HEADLINE = (
    "Classify the headline into one of: tech, business, entertainment, sports, other. "
    "Answer with the label only.\n\nHeadline: {}"
)


def prompt(text: str, **kwargs: object) -> Prompt:
    return Prompt("m", [Message("user", text)], **kwargs)  # type: ignore[arg-type]


def test_echo_reply() -> None:
    reply = respond(prompt("one two three"), "k")
    assert reply.text == "Sandbox reply (m): one two three"
    assert reply.finish is FinishReason.STOP
    assert reply.completion_tokens == 9


def test_echo_is_limited_to_twelve_words_and_drops_directives() -> None:
    words = " ".join(f"w{i}" for i in range(20))
    assert respond(prompt(words + " [[latency:5]]"), "k").text.endswith("w11")
    assert "[[" not in respond(prompt("hi [[flaky:2]]"), "k").text


def test_same_prompt_same_reply_across_processes() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}}
    here = respond(
        prompt("give json", response_format=ResponseFormat(FormatKind.JSON_SCHEMA, schema)), "abc"
    ).text
    code = (
        "from batchain.sandbox.prompt import *; from batchain.sandbox.responder import respond;"
        f"print(respond(Prompt('m',[Message('user','give json')],"
        f"response_format=ResponseFormat(FormatKind.JSON_SCHEMA,{schema!r})),'abc').text)"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert here == there


def test_labels_detection() -> None:
    assert find_labels(HEADLINE.format("x")) == [
        "tech",
        "business",
        "entertainment",
        "sports",
        "other",
    ]
    assert find_labels("Answer with yes or no.") == ["yes", "no"]
    assert find_labels("Respond with 'positive', 'negative' or 'neutral'.") == [
        "positive",
        "negative",
        "neutral",
    ]
    assert find_labels("Pick one of the following categories: red | green | blue") == [
        "red",
        "green",
        "blue",
    ]
    assert find_labels("Classify the sentiment [positive/negative]") == ["positive", "negative"]
    assert find_labels("Choose one of the following:\n- alpha\n- beta\n- gamma\n\nText: x") == [
        "alpha",
        "beta",
        "gamma",
    ]
    assert find_labels("Label as spam/ham: win a free prize") == ["spam", "ham"]
    assert find_labels("Tell me a story about a dog.") is None
    assert find_labels("Write about one of the best days.") is None


def test_pick_label_keywords_and_hash_fallback() -> None:
    labels = ["tech", "business", "sports"]
    assert pick_label(labels, HEADLINE.format("Google launches new AI chip"), "k") == "tech"
    neutral = HEADLINE.format("Quiet day")
    assert pick_label(labels, neutral, "k1") == pick_label(labels, neutral, "k1")
    picks = {pick_label(labels, neutral, f"k{i}") for i in range(30)}
    assert len(picks) > 1


def test_label_reply_is_exactly_one_label() -> None:
    reply = respond(prompt(HEADLINE.format("Stocks fall as bank profits slump")), "k")
    assert reply.text == "business"
    assert reply.completion_tokens == 1


def test_tool_call_rules() -> None:
    tool = Tool("lookup", "", {"type": "object", "properties": {"q": {"type": "string"}}})
    other = Tool("other", "", {"type": "object", "properties": {}})
    auto = respond(prompt("find", tools=[tool, other]), "k")
    assert auto.finish is FinishReason.TOOL_CALL and auto.tool_name == "lookup"
    assert set(auto.tool_args or {}) == {"q"}
    forced = respond(prompt("find", tools=[tool, other], tool_mode=ToolMode.FORCED, forced_tool="other"), "k")
    assert forced.tool_name == "other"
    none = respond(prompt("find", tools=[tool], tool_mode=ToolMode.NONE), "k")
    assert none.finish is FinishReason.STOP
    after = Prompt("m", [Message("user", "find"), Message("tool", "42", is_tool_result=True)], tools=[tool])
    assert respond(after, "k").finish is FinishReason.STOP
    required = Prompt(
        "m",
        [Message("user", "find"), Message("tool", "42", is_tool_result=True)],
        tools=[tool],
        tool_mode=ToolMode.REQUIRED,
    )
    assert respond(required, "k").finish is FinishReason.TOOL_CALL


def test_stop_and_max_tokens() -> None:
    stopped = respond(prompt("alpha beta gamma", stop=("beta",)), "k")
    assert stopped.finish is FinishReason.STOP_SEQUENCE and stopped.stop_sequence == "beta"
    assert stopped.text == "Sandbox reply (m): alpha "
    cut = respond(prompt("alpha beta gamma", max_tokens=2), "k")
    assert cut.finish is FinishReason.LENGTH and cut.text == "Sandbox reply"
    assert cut.completion_tokens == 2
    # whichever comes first wins
    both = respond(prompt("alpha beta gamma", max_tokens=50, stop=("reply",)), "k")
    assert both.text == "Sandbox " and both.finish is FinishReason.STOP_SEQUENCE


def test_json_object_format() -> None:
    reply = respond(prompt("json please", response_format=ResponseFormat(FormatKind.JSON_OBJECT)), "k")
    assert json.loads(reply.text) == {"answer": "json please"}


def source(key: str = "k") -> ValueSource:
    return ValueSource(key, ["alpha", "beta", "gamma"])


def test_schema_generation_covers_keywords() -> None:
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
        "type": "object",
        "properties": {
            "s": {"type": "string", "minLength": 30, "maxLength": 40},
            "i": {"type": "integer", "minimum": 5, "maximum": 6},
            "x": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 12},
            "f": {"type": "number", "minimum": 0.5, "maximum": 0.75},
            "b": {"type": "boolean"},
            "n": {"type": "null"},
            "c": {"const": "fixed"},
            "e": {"enum": [1, 2, 3]},
            "a": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3},
            "t": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
            "any": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
            "one": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "all": {"allOf": [{"properties": {"p": {"type": "integer"}}}, {"required": ["q"]}]},
            "multi": {"type": ["null", "integer"]},
            "u": {"type": "string", "format": "uuid"},
            "tree": {"$ref": "#/$defs/Node"},
            "hint": {"type": "integer", "description": "{maximum: 2030, minimum: 1900}"},
        },
    }
    value = generate(schema, source())
    assert 30 <= len(value["s"]) <= 40
    assert value["i"] in (5, 6) and value["x"] == 11
    assert 0.5 <= value["f"] <= 0.75
    assert isinstance(value["b"], bool) and value["n"] is None
    assert value["c"] == "fixed" and value["e"] in (1, 2, 3)
    assert len(value["a"]) == 3
    assert isinstance(value["t"][0], int) and isinstance(value["t"][1], str)
    assert value["any"] == "2024-01-01T00:00:00Z"
    assert isinstance(value["one"], int)
    assert isinstance(value["all"]["p"], int) and "q" in value["all"]
    assert isinstance(value["multi"], int)
    assert len(value["u"]) == 36
    assert isinstance(value["tree"], dict)
    assert 1900 <= value["hint"] <= 2030
    assert generate(schema, source()) == value  # deterministic


def test_schema_definitions_ref() -> None:
    schema = {
        "definitions": {"X": {"type": "integer", "minimum": 7, "maximum": 7}},
        "$ref": "#/definitions/X",
    }
    assert generate(schema, source()) == 7


def test_labels_in_other_languages() -> None:
    # seed 001 (Chinese): the label list follows a fullwidth colon, separated by 、
    zh = "将以下文本分类为以下类别之一\uff1a技术、商业、娱乐、体育、其他\n\n文本: {text}\n\n分类:"
    labels = find_labels(zh)
    assert labels == ["技术", "商业", "娱乐", "体育", "其他"]
    assert pick_label(labels, zh.replace("{text}", "苹果发布新款芯片和人工智能手机"), "k") == "技术"
    assert pick_label(labels, zh.replace("{text}", "球队在决赛中夺得冠军"), "k") == "体育"
    assert pick_label(labels, zh.replace("{text}", "股市大涨\uff0c公司营收创新高"), "k") == "商业"
    sentiment = "判断情感\uff0c回答以下之一\uff1a正面、负面、中性\n评论: 很失望\uff0c质量太差了"
    assert pick_label(find_labels(sentiment) or [], sentiment, "k") == "负面"
    assert find_labels("Klassifiziere den Text. Kategorien: Technik, Wirtschaft, Sport") == [
        "Technik",
        "Wirtschaft",
        "Sport",
    ]
    assert find_labels("Clasifica el texto en una categoría: positivo, negativo") == ["positivo", "negativo"]
    # a colon followed by text, not a list, is no label list
    assert find_labels("文本: 今天天气很好\n\n总结:") is None
    assert find_labels("Summarize: the cat, the dog and the bird went out") is None


def test_a_chinese_classification_prompt_gets_one_of_its_labels() -> None:
    text = "将以下文本分类为以下类别之一\uff1a技术、商业、娱乐、体育、其他\n\n文本: 新电影票房破纪录\n\n分类:"
    prompt = Prompt(model="gpt-4o-mini", messages=[Message(role="user", text=text)])
    assert respond(prompt, "k").text == "娱乐"
