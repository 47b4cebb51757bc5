"""LiteLLM's SDK against sidegate, run as a process of its own (see tests/test_client_litellm.py).

Usage: python litellm_client.py <base URL> <chat model>...
Prints one JSON object with what each call returned.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any

# LiteLLM fetches its model price map from the internet at import unless told
# to use the copy it ships; the tests download nothing.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
# Its own warnings (its types, its use of pydantic) are not what is tested.
warnings.simplefilter("ignore")

import litellm  # noqa: E402

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "celsius": {"type": "boolean"}},
            "required": ["city", "celsius"],
        },
    },
}
FORECAST = {
    "type": "json_schema",
    "json_schema": {
        "name": "Forecast",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "high": {"type": "number"}},
            "required": ["city", "high"],
            "additionalProperties": False,
        },
    },
}


def run(base: str, model: str) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model": f"openai/{model}",
        "api_base": f"{base}/v1",
        "api_key": "app-placeholder",
        "num_retries": 0,
    }
    r: dict[str, Any] = {}
    resp: Any = litellm.completion(messages=[{"role": "user", "content": "hi"}], **args)
    r["content"] = resp.choices[0].message.content
    r["usage"] = resp.usage.model_dump()
    stream: Any = litellm.completion(
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        stream_options={"include_usage": True},
        **args,
    )
    chunks = list(stream)
    r["chunks"] = len(chunks)
    r["streamed"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    r["stream_usage"] = max(
        (c.usage.total_tokens for c in chunks if getattr(c, "usage", None)), default=0
    )
    for mode in ("whole", "streamed"):
        streamed = mode == "streamed"
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
        first: Any = litellm.completion(messages=messages, tools=[WEATHER], **args)
        call = first.choices[0].message.tool_calls[0]
        r[f"tool_args_{mode}"] = json.loads(call.function.arguments)
        messages += [
            first.choices[0].message.model_dump(),
            {"role": "tool", "tool_call_id": call.id, "content": "12 degrees"},
        ]
        final: Any = litellm.completion(
            messages=messages, tools=[WEATHER], stream=streamed, **args
        )
        if streamed:
            final = litellm.stream_chunk_builder(list(final), messages=messages)
        r[f"after_tool_{mode}"] = {
            "finish": final.choices[0].finish_reason,
            "tool_calls": bool(final.choices[0].message.tool_calls),
        }
        out: Any = litellm.completion(
            messages=[{"role": "user", "content": "Forecast for Oslo"}],
            response_format=FORECAST,
            stream=streamed,
            **args,
        )
        if streamed:
            out = litellm.stream_chunk_builder(list(out))
        r[f"structured_{mode}"] = json.loads(out.choices[0].message.content)
    return r


def main(base: str, models: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"models": {m: run(base, m) for m in models}}
    emb: Any = litellm.embedding(
        model="openai/embed",
        input=["a", "b"],
        api_base=f"{base}/v1",
        api_key="app-placeholder",
        num_retries=0,
    )
    result["embedding"] = [d["embedding"] for d in emb.data]
    result["embedding_index"] = [d["index"] for d in emb.data]
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
