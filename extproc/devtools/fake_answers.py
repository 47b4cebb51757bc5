"""What the fake providers answer, as a model would: pure functions over a request body.

Real clients check what they get: LangChain and instructor validate the JSON
of a structured answer against their schema, an agent loop expects the model
to stop calling tools once it has a tool's result, and the openai SDKs ask for
embeddings in base64. So the fakes:

- honour ``response_format`` (OpenAI) and ``output_config.format`` (Anthropic):
  ``json_schema`` gives a JSON value that follows the schema's types;
  ``json_object`` gives a JSON object, following a JSON schema the prompt
  quotes when there is one (instructor's JSON mode puts it there);
- choose a tool by ``tool_choice`` (none, auto, required/any, a named one),
  and answer in text once the last message is a tool's result (unless a tool
  is forced);
- make tool arguments that follow the tool's schema: strings ``"test"``,
  numbers 1, booleans true, enums their first value, ``$ref`` followed;
- encode embeddings as ``encoding_format`` asks (floats, or base64 of
  little-endian float32s as OpenAI sends).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

# Schemas nest; a recursive one ($ref to itself) stops here.
_MAX_DEPTH = 8
# How much of a prompt is searched for a quoted schema.
_MAX_PROMPT_SCAN = 64 * 1024


def instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A JSON value that follows ``schema`` (the subset clients send)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return instance(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            # The first option that is not null: Optional[X] is anyOf [X, null].
            chosen = next(
                (o for o in options if not (isinstance(o, dict) and o.get("type") == "null")),
                options[0],
            )
            return instance(chosen, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required", list(props))
        return {
            name: instance(props[name], root, depth + 1)
            for name in required
            if isinstance(name, str) and name in props
        }
    if kind == "array":
        item = instance(schema.get("items", {"type": "string"}), root, depth + 1)
        return [item] * max(1, int(schema.get("minItems", 1) or 1))
    return {
        "string": "test",
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "null": None,
    }.get(str(kind), "test")


def _prompt_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    system = body.get("system")
    for item in [system] if isinstance(system, str) else system or []:
        parts.append(item if isinstance(item, str) else str(item.get("text", "")))
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(p.get("text", "")) for p in content if isinstance(p, dict)]
    return "\n".join(parts)[:_MAX_PROMPT_SCAN]


def quoted_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The first JSON schema (an object with ``properties``) quoted in the prompt."""
    text = _prompt_text(body)
    decoder = json.JSONDecoder()
    at = text.find("{")
    while at >= 0:
        try:
            value, _ = decoder.raw_decode(text, at)
        except ValueError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("properties"), dict):
            return value
        at = text.find("{", at + 1)
    return None


def _object_answer(body: dict[str, Any], schema: Any) -> Any:
    """An answer for a schema that may say no more than "an object"."""
    if isinstance(schema, dict) and not schema.get("properties") and "$ref" not in schema:
        quoted = quoted_schema(body)
        if quoted is not None:
            return instance(quoted)
        if schema.get("type", "object") == "object":
            return {"answer": "test"}
    return instance(schema)


def structured_text(body: dict[str, Any], api: str) -> str | None:
    """The JSON answer a structured-output request asks for, or None for a text answer."""
    if api == "openai":
        fmt = body.get("response_format")
        if not isinstance(fmt, dict):
            return None
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            return json.dumps(_object_answer(body, spec.get("schema", {"type": "object"})))
        if fmt.get("type") == "json_object":
            return json.dumps(_object_answer(body, {"type": "object"}))
        return None
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return json.dumps(_object_answer(body, fmt.get("schema")))
    return None


def _after_tool_result(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    last = messages[-1] if messages else None
    if not isinstance(last, dict):
        return False
    if last.get("role") == "tool":
        return True
    content = last.get("content")
    return (
        last.get("role") == "user"
        and isinstance(content, list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def chosen_tool(body: dict[str, Any], api: str) -> tuple[str, Any] | None:
    """The tool the fake calls, with its input schema, or None for a text answer."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    if api == "openai":
        defs = [
            (str(t["function"].get("name")), t["function"].get("parameters"))
            for t in tools
            if isinstance(t.get("function"), dict)
        ]
    else:
        defs = [(str(t.get("name")), t.get("input_schema")) for t in tools]
    if not defs:
        return None
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else choice
    named = None
    if isinstance(choice, dict):
        fn = choice.get("function")
        named = fn.get("name") if isinstance(fn, dict) else choice.get("name")
    if kind == "none":
        return None
    if named is not None and kind in ("function", "tool"):
        return next((d for d in defs if d[0] == named), None)
    if kind in ("required", "any"):
        return defs[0]
    # auto: a model calls a tool, and answers once it has the result.
    return None if _after_tool_result(body) else defs[0]


def tool_input(body: dict[str, Any], schema: Any) -> Any:
    # A bare object schema is how json_object reaches an Anthropic model
    # (sidegate's output tool); the prompt may quote the schema it wants.
    bare = isinstance(schema, dict) and not schema.get("properties") and "$ref" not in schema
    quoted = quoted_schema(body) if bare else None
    return instance(quoted if quoted is not None else schema)


def embedding(vector: list[float], encoding_format: Any) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
