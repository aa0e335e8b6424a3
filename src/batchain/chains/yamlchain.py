"""Chains written as YAML, for users who write no Python.

A YAML chain is a prompt, a model, and optionally a label set or an output schema::

    # classify.yaml
    description: Classify news headlines by topic.     # optional, for people
    model:
      provider: openai              # openai | anthropic | gemini
      name: gpt-4o-mini
      temperature: 0                # optional: temperature, max_tokens, top_p, stop, timeout,
      max_tokens: 16                # seed (openai), top_k (anthropic), base_url, api_key_env,
                                    # parameters (other request fields, sent as they are)
    prompt:
      system: You are a careful news editor.            # optional
      user: |                                           # required
        Classify the headline into one of: {labels}.
        Answer with the label only.

        Headline: {headline}
    labels: [tech, business, entertainment, sports, other]   # or: schema: {JSON schema}

``{name}`` in a template is a field of the input row (``{{`` and ``}}`` are literal
braces); ``{labels}`` is the label set, comma-separated. The chain is
``prompt | model | parser``:

* with ``labels``, the answer is matched to a label ignoring case, surrounding whitespace,
  quotes and a final full stop, and the output is the label as written in the file; any
  other answer fails the item with :class:`InvalidLabel`;
* with ``schema`` (a JSON schema whose top level is an object), the model answers through
  structured output and the output is a JSON object, checked against the schema's types,
  ``required`` and ``enum``; a mismatch fails the item with :class:`SchemaMismatch`;
* otherwise the output is the answer's text.

An input row that lacks a field the prompt uses fails with :class:`MissingInputVariable`,
which names the field. A plain text (or number) input, such as a JSONL line ``"..."``,
fills the template's only variable.

The endpoint and key come from the usual environment variables (``OPENAI_BASE_URL`` /
``OPENAI_API_KEY``, ``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY``), so the same file runs
against the real APIs or ``batchain sandbox serve``. Keys never appear in the file.

Mistakes in the file raise :class:`YamlChainError`, whose message starts with the file
(and line, for YAML syntax) and names the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda

from batchain.errors import InvalidLabel, MissingInputVariable, SchemaMismatch, YamlChainError

__all__ = [
    "PROVIDERS",
    "YAML_SUFFIXES",
    "InvalidLabel",
    "MissingInputVariable",
    "SchemaMismatch",
    "YamlChainError",
    "is_yaml_ref",
    "load_yaml_chain",
]

YAML_SUFFIXES: Final = (".yaml", ".yml")
PROVIDERS: Final = ("openai", "anthropic", "gemini")

_TOP_KEYS: Final = ("description", "model", "prompt", "labels", "schema")
_PROMPT_KEYS: Final = ("system", "user")
#: model keys and the type each must have; the provider's own name for it is on the right
_COMMON_PARAMS: Final[dict[str, tuple[type | tuple[type, ...], str]]] = {
    "temperature": ((int, float), "temperature"),
    "max_tokens": (int, "max_tokens"),
    "top_p": ((int, float), "top_p"),
    "timeout": ((int, float), "timeout"),
    "stop": ((str, list), "stop"),
}
_PROVIDER_PARAMS: Final[dict[str, dict[str, tuple[type | tuple[type, ...], str]]]] = {
    "openai": {"seed": (int, "seed")},
    "anthropic": {"top_k": (int, "top_k")},
    "gemini": {"top_k": (int, "top_k"), "seed": (int, "seed")},
}
_MODEL_KEYS: Final = ("provider", "name", "base_url", "api_key_env", "parameters")
_ENV: Final = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    # the google-genai SDK's own variable for its base URL
    "gemini": ("GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"),
}
_DEFAULT_MAX_TOKENS: Final = {"anthropic": 1024}
_TITLE_RE: Final = re.compile(r"[^A-Za-z0-9_-]+")
_LABEL_STRIP: Final = " \t\r\n\"'`*.!"


def is_yaml_ref(ref: str) -> bool:
    """True for a chain reference that names a YAML chain file (``.yaml`` / ``.yml``)."""
    return ref.strip().lower().endswith(YAML_SUFFIXES)


def load_yaml_chain(path: str | os.PathLike[str]) -> Runnable[Any, Any]:
    """The chain described by the YAML file at ``path`` (see the module docs for the format).

    Raises :class:`YamlChainError` (a :class:`~batchain.chains.ref.ChainRefError`) for a file
    that is missing, not YAML, or describes no valid chain.
    """
    spec = _Spec(str(path), _read(path))
    return spec.build()


# -- reading ------------------------------------------------------------------------------------


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    import yaml

    name = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlChainError(f"chain file not found: {name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlChainError(f"cannot read chain file {name}: {exc}") from None
    try:
        data = yaml.load(text, Loader=_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlChainError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        raise YamlChainError(f"{name}: the file is empty; it needs at least 'model' and 'prompt'")
    if not isinstance(data, dict):
        raise YamlChainError(
            f"{name}: the top level must be a mapping with 'model' and 'prompt', not a {_kind(data)}"
        )
    return data


def _loader() -> Any:
    """PyYAML's safe loader with YAML 1.2 booleans: ``yes``/``no``/``on``/``off`` stay text
    (they are common labels), only ``true``/``false`` are booleans."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    resolvers = {
        first: [(tag, regexp) for tag, regexp in rs if tag != "tag:yaml.org,2002:bool"]
        for first, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.yaml_implicit_resolvers = resolvers
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return Loader


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


class _Spec:
    """One parsed file; every check raises :class:`YamlChainError` naming the key."""

    def __init__(self, name: str, data: dict[str, Any]) -> None:
        self.name = name
        self.data = data

    def fail(self, key: str, message: str) -> YamlChainError:
        return YamlChainError(f"{self.name}: {key}: {message}")

    def build(self) -> Runnable[Any, Any]:
        unknown = [str(k) for k in self.data if k not in _TOP_KEYS]
        if unknown:
            raise self.fail(unknown[0], f"unknown key (the keys are: {', '.join(_TOP_KEYS)})")
        description = self.data.get("description")
        if description is not None and not isinstance(description, str):
            raise self.fail("description", f"must be text, not a {_kind(description)}")
        labels = self._labels()
        schema = self._schema()
        if labels is not None and schema is not None:
            raise self.fail("labels", "give either labels or schema, not both")
        prompt, variables = self._prompt(labels)
        model = self._model()
        steps: Runnable[Any, Any] = RunnableLambda(_InputCheck(self.name, variables), name="check_input")
        if schema is not None:
            structured: Runnable[Any, Any] = model.with_structured_output(schema)
            check = RunnableLambda(_SchemaCheck(self.name, schema), name="check_schema")
            return steps | prompt | structured | check
        chain = steps | prompt | model | StrOutputParser()
        if labels is not None:
            return chain | RunnableLambda(_LabelMatch(self.name, labels), name="match_label")
        return chain

    # -- sections ---------------------------------------------------------------------------

    def _prompt(self, labels: list[str] | None) -> tuple[ChatPromptTemplate, tuple[str, ...]]:
        raw = self.data.get("prompt")
        if raw is None:
            raise self.fail("prompt", "missing: give prompt.user (and optionally prompt.system)")
        if isinstance(raw, str):
            raw = {"user": raw}
        if not isinstance(raw, dict):
            raise self.fail("prompt", f"must be a mapping with 'user' (and 'system'), not a {_kind(raw)}")
        unknown = [str(k) for k in raw if k not in _PROMPT_KEYS]
        if unknown:
            raise self.fail(f"prompt.{unknown[0]}", "unknown key (the keys are: system, user)")
        if raw.get("user") is None:
            raise self.fail("prompt.user", "missing: the template of the user message")
        messages: list[tuple[str, str]] = []
        for key, role in (("system", "system"), ("user", "human")):
            template = raw.get(key)
            if template is None:
                continue
            if not isinstance(template, str) or not template.strip():
                raise self.fail(f"prompt.{key}", "must be non-empty text")
            self._check_template(f"prompt.{key}", template)
            messages.append((role, template))
        prompt = ChatPromptTemplate.from_messages(messages)
        if labels is not None and "labels" in prompt.input_variables:
            prompt = prompt.partial(labels=", ".join(labels))
        return prompt, tuple(prompt.input_variables)

    def _check_template(self, key: str, template: str) -> None:
        try:
            names = ChatPromptTemplate.from_messages([("human", template)]).input_variables
        except (ValueError, KeyError) as exc:
            raise self.fail(
                key, f"invalid template: {exc} (write {{{{ and }}}} for literal braces)"
            ) from None
        if any(not n.strip() for n in names):
            raise self.fail(key, "invalid template: empty {} (name the input field, or write {{}})")

    def _labels(self) -> list[str] | None:
        raw = self.data.get("labels")
        if raw is None:
            return None
        if not isinstance(raw, list) or not raw:
            raise self.fail("labels", "must be a non-empty list, e.g. [positive, negative]")
        labels: list[str] = []
        seen: dict[str, str] = {}
        for i, label in enumerate(raw):
            if isinstance(label, bool) or not isinstance(label, str | int | float):
                raise self.fail(f"labels[{i}]", f"must be text, not a {_kind(label)} (quote it)")
            text = str(label).strip()
            key = _norm(text)
            if not key:
                raise self.fail(f"labels[{i}]", "is empty")
            if key in seen:
                raise self.fail(f"labels[{i}]", f"{text!r} repeats {seen[key]!r} (labels ignore case)")
            seen[key] = text
            labels.append(text)
        return labels

    def _schema(self) -> dict[str, Any] | None:
        raw = self.data.get("schema")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise self.fail("schema", f"must be a JSON schema (a mapping), not a {_kind(raw)}")
        if raw.get("type") != "object" or not isinstance(raw.get("properties"), dict):
            raise self.fail("schema", "the top level must be 'type: object' with 'properties'")
        required = raw.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise self.fail("schema.required", "must be a list of property names")
        missing = [r for r in required if r not in raw["properties"]]
        if missing:
            raise self.fail("schema.required", f"{missing[0]!r} is not in schema.properties")
        schema = dict(raw)
        if not isinstance(schema.get("title"), str) or not schema["title"].strip():
            # structured output needs a name for the schema: the file's name
            schema["title"] = _TITLE_RE.sub("_", Path(self.name).stem).strip("_") or "output"
        schema.setdefault("description", f"The answer, as a {schema['title']} object.")
        return schema

    def _model(self) -> BaseChatModel:
        raw = self.data.get("model")
        if raw is None:
            raise self.fail(
                "model", "missing: give model.provider (openai, anthropic or gemini) and model.name"
            )
        if not isinstance(raw, dict):
            raise self.fail("model", f"must be a mapping with provider and name, not a {_kind(raw)}")
        provider = raw.get("provider")
        if provider is None:
            raise self.fail("model.provider", f"missing: one of {', '.join(PROVIDERS)}")
        if provider not in PROVIDERS:
            raise self.fail("model.provider", f"unknown provider {provider!r} (use {', '.join(PROVIDERS)})")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.fail("model.name", "missing: the model name, e.g. gpt-4o-mini or claude-haiku-4-5")
        params = _COMMON_PARAMS | _PROVIDER_PARAMS[provider]
        allowed = (*_MODEL_KEYS, *params)
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in allowed:
                raise self.fail(
                    f"model.{key}",
                    f"unknown key for provider {provider} (the keys are: {', '.join(allowed)}; "
                    "put other request fields under model.parameters)",
                )
            if key in params:
                kwargs[params[key][1]] = self._param(key, value, params[key][0])
        if "max_tokens" not in kwargs and provider in _DEFAULT_MAX_TOKENS:
            kwargs["max_tokens"] = _DEFAULT_MAX_TOKENS[provider]
        extra = raw.get("parameters")
        if extra is not None and not isinstance(extra, dict):
            raise self.fail("model.parameters", f"must be a mapping, not a {_kind(extra)}")
        if extra:
            clash = [k for k in extra if k in params or k in ("model", "messages")]
            if clash:
                raise self.fail(f"model.parameters.{clash[0]}", "set it directly under model, not here")
            kwargs.update(_split_parameters(provider, extra))
        key_env, url_env = _ENV[provider]
        key_env = self._text(raw, "api_key_env") or key_env
        api_key = os.environ.get(key_env)
        if not api_key:
            raise self.fail(
                "model.provider",
                f"{provider} needs an API key in ${key_env} (for the local sandbox: "
                "`batchain sandbox serve` prints the exports)",
            )
        base_url = self._text(raw, "base_url") or os.environ.get(url_env) or None
        try:
            cls = _model_class(provider)
        except ImportError as exc:
            raise self.fail("model.provider", str(exc)) from None
        if base_url:
            kwargs["base_url"] = base_url
        try:
            model: BaseChatModel = cls(model=name, api_key=api_key, **kwargs)
            return model
        except Exception as exc:  # pydantic validation of the model's settings
            raise self.fail("model", f"cannot create the {provider} model: {_first_line(exc)}") from None

    def _param(self, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
        if isinstance(value, bool) or not isinstance(value, kind):
            raise self.fail(f"model.{key}", f"must be a {_type_name(kind)}, not a {_kind(value)}")
        return self._checked(key, value)

    def _checked(self, key: str, value: Any) -> Any:
        if key == "stop":
            stops = [value] if isinstance(value, str) else value
            if not all(isinstance(s, str) for s in stops):
                raise self.fail("model.stop", "must be text or a list of texts")
            return stops
        if key in ("max_tokens", "top_k") and value < 1:
            raise self.fail(f"model.{key}", "must be at least 1")
        if key in ("temperature", "top_p", "timeout") and value < 0:
            raise self.fail(f"model.{key}", "must not be negative")
        return value

    def _text(self, raw: dict[str, Any], key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"model.{key}", "must be non-empty text")
        return value.strip()


def _model_class(provider: str) -> Any:
    if provider == "openai":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI
    if provider == "gemini":
        try:
            from langchain_google_genai import ChatGoogleGenerativeAI
        except ImportError:
            raise ImportError("gemini needs langchain-google-genai: pip install 'batchain[gemini]'") from None

        return ChatGoogleGenerativeAI
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic


def _split_parameters(provider: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Settings the model class knows go to it by name; the rest into the request body."""
    fields = _model_class(provider).model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias}
    out: dict[str, Any] = {k: v for k, v in extra.items() if k in known}
    body = {k: v for k, v in extra.items() if k not in known}
    if body:
        out["model_kwargs"] = body
    return out


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "whole number", float: "number", str: "text", list: "list"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- the steps around the model (picklable classes, not closures) ---------------------------------


def _norm(text: str) -> str:
    return " ".join(text.strip(_LABEL_STRIP).split()).casefold()


def _answer_text(answer: Any) -> str:
    if isinstance(answer, BaseMessage):
        answer = answer.content
    if isinstance(answer, list):  # content blocks
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in answer)
    return "" if answer is None else str(answer)


class _InputCheck:
    """Fails an item whose input lacks a prompt variable, naming it; wraps plain values."""

    def __init__(self, name: str, variables: tuple[str, ...]) -> None:
        self.name = Path(name).name
        self.variables = variables

    def __call__(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            missing = [v for v in self.variables if v not in value]
            if missing:
                have = ", ".join(str(k) for k in value) or "no fields"
                raise MissingInputVariable(
                    f"input has no field {missing[0]!r}, which the prompt of {self.name} uses "
                    f"(the input has: {have})"
                )
            return value
        if len(self.variables) == 1 and isinstance(value, str | int | float) and not isinstance(value, bool):
            return {self.variables[0]: value}  # a line of text fills the only variable
        wanted = ", ".join(repr(v) for v in self.variables) or "none"
        raise MissingInputVariable(
            f"input is a {_kind(value)}, but the prompt of {self.name} needs an object "
            f"with the fields {wanted}"
        )


class _LabelMatch:
    def __init__(self, name: str, labels: list[str]) -> None:
        self.name = Path(name).name
        self.labels = labels
        self.by_norm = {_norm(label): label for label in labels}

    def __call__(self, answer: Any) -> str:
        text = _answer_text(answer)
        label = self.by_norm.get(_norm(text))
        if label is None:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise InvalidLabel(
                f"answer {shown!r} is not one of the labels of {self.name}: {', '.join(self.labels)}"
            )
        return label


class _SchemaCheck:
    def __init__(self, name: str, schema: dict[str, Any]) -> None:
        self.name = Path(name).name
        self.schema = schema

    def __call__(self, output: Any) -> Any:
        if hasattr(output, "model_dump"):
            output = output.model_dump()
        problem = _mismatch(output, self.schema, "output")
        if problem is not None:
            raise SchemaMismatch(f"{problem} (schema of {self.name})")
        return output


_JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _mismatch(value: Any, schema: Any, where: str) -> str | None:
    """Where ``value`` breaks ``schema`` (types, required, enum, items), or None."""
    if not isinstance(schema, dict):
        return None
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        ok = False
        for name in names:
            types = _JSON_TYPES.get(name)
            is_bool_as_number = name != "boolean" and isinstance(value, bool)
            if types is None or (isinstance(value, types) and not is_bool_as_number):
                ok = True
                break
        if not ok:
            return f"{where} should be {' or '.join(names)}, got {_kind(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} is {value!r}, not one of {schema['enum']!r}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                return f"{where} has no {key!r}"
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key in value:
                problem = _mismatch(value[key], sub, f"{where}.{key}")
                if problem:
                    return problem
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problem = _mismatch(item, schema["items"], f"{where}[{i}]")
            if problem:
                return problem
    return None
