"""OpenAI ``response_format`` on an Anthropic provider: JSON that follows a schema.

Two ways, chosen per model (``models.<name>.structured_outputs``):

- ``native``: Anthropic's structured outputs, ``output_config.format`` with
  the schema. The answer is a text block holding the JSON, as OpenAI's is.
- ``tool`` (the default, served by every model with tools): one more tool,
  whose input schema is the requested schema, and a ``tool_choice`` that
  forces it. The tool's input is the answer: it goes back to the client as
  ``message.content`` (streamed: its ``input_json_delta`` events become
  content deltas) with ``finish_reason: stop``, and never as a tool call.

``json_object`` (any JSON object, no schema) always takes the tool way:
Anthropic's structured outputs need a schema, and a tool input is an object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config import StructuredOutputs
from ..errors import GatewayError

# The tool's name when the client's schema has no usable one (OpenAI and
# Anthropic tool names share this alphabet).
DEFAULT_TOOL = "json_output"
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOOL_DESCRIPTION = (
    "Give your final answer by calling this tool: its input is the answer, "
    "a JSON value that follows the schema."
)


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What a request's ``response_format`` adds to the Anthropic request."""

    tool: dict[str, Any] | None = None  # the forced tool (the tool way)
    output_config: dict[str, Any] | None = None  # Anthropic's parameter (the native way)

    @property
    def tool_name(self) -> str | None:
        return str(self.tool["name"]) if self.tool is not None else None


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, code="unsupported_for_provider", param=param)


def output_format(
    fmt: Any, mode: StructuredOutputs, client_tools: list[dict[str, Any]]
) -> OutputFormat | None:
    """The Anthropic side of ``response_format``, or None when it asks for plain text."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad("response_format must be an object", "response_format")
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    taken = {str(t.get("name")) for t in client_tools}
    if kind == "json_object":
        return OutputFormat(tool=_tool(DEFAULT_TOOL, None, {"type": "object"}, taken))
    if kind != "json_schema":
        raise _bad(
            f"response_format type {str(kind)[:40]!r} is not supported; "
            "use text, json_object or json_schema",
            "response_format.type",
        )
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise _bad("json_schema needs an object", "response_format.json_schema")
    schema = spec.get("schema", {"type": "object"})
    if not isinstance(schema, dict):
        raise _bad("the schema must be a JSON object", "response_format.json_schema.schema")
    if mode is StructuredOutputs.NATIVE:
        return OutputFormat(output_config={"format": {"type": "json_schema", "schema": schema}})
    if schema.get("type", "object") != "object":
        # A tool's input is always an object.
        raise _bad(
            "this model answers a schema through a tool, whose input must be an object; "
            "give the schema type object",
            "response_format.json_schema.schema",
        )
    name = spec.get("name")
    name = name if isinstance(name, str) and _TOOL_NAME.fullmatch(name) else DEFAULT_TOOL
    description = spec.get("description")
    return OutputFormat(tool=_tool(name, description, schema, taken))


def _tool(name: str, description: Any, schema: dict[str, Any], taken: set[str]) -> dict[str, Any]:
    if name in taken:
        raise _bad(
            f"a tool is named {name!r} like the response format; rename one of them",
            "response_format.json_schema.name",
        )
    text = _TOOL_DESCRIPTION
    if isinstance(description, str) and description:
        text += " " + description
    return {"name": name, "description": text, "input_schema": schema}


def tool_choice(
    client_choice: dict[str, Any] | None, has_client_tools: bool, name: str
) -> dict[str, Any]:
    """The tool choice once the output tool is among the tools.

    Alone, the output tool is forced. Beside the client's tools the model must
    call one of them (``any``): the output tool ends the turn, another tool is
    a call the client runs. A client that forced one of its own tools keeps it.
    """
    forced: dict[str, Any] = {"type": "tool", "name": name}
    if client_choice is None or not has_client_tools:
        out = forced
    elif client_choice["type"] == "tool":
        out = dict(client_choice)
    elif client_choice["type"] == "none":
        out = forced  # no client tool, but the answer still comes through the output tool
    else:
        out = {"type": "any"}
    if client_choice is not None and client_choice.get("disable_parallel_tool_use"):
        out["disable_parallel_tool_use"] = True
    return out
