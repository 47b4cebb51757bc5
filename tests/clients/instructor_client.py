"""instructor against sidegate, run in a venv of its own (see tests/test_client_instructor.py).

Usage: python instructor_client.py <base URL> <model>
Prints one JSON object: per instructor mode, what ``create_with_completion``
and ``create_partial`` returned.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import instructor
import openai
from pydantic import BaseModel


class Address(BaseModel):
    city: str
    zip_code: int


class User(BaseModel):
    name: str
    age: int
    verified: bool
    tags: list[str]
    address: Address


MODES = {
    "TOOLS": instructor.Mode.TOOLS,
    "JSON": instructor.Mode.JSON,
    "JSON_SCHEMA": instructor.Mode.JSON_SCHEMA,
}
PROMPT = [{"role": "user", "content": "Jason is 25 and lives in Paris, 75001."}]


def main(base: str, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with openai.OpenAI(base_url=f"{base}/v1", api_key="app-placeholder", max_retries=0) as sdk:
        for name, mode in MODES.items():
            client = instructor.from_openai(sdk, mode=mode)
            # max_retries=0: a validation failure must fail the test, not be retried away.
            user, completion = client.chat.completions.create_with_completion(
                model=model, response_model=User, max_retries=0, messages=PROMPT
            )
            choice = completion.choices[0]
            parts = list(
                client.chat.completions.create_partial(
                    model=model, response_model=User, max_retries=0, messages=PROMPT
                )
            )
            out[name] = {
                "user": user.model_dump(),
                "is_user": isinstance(user, User),
                "finish_reason": choice.finish_reason,
                "content": choice.message.content,
                "tool_calls": bool(choice.message.tool_calls),
                "partials": len(parts),
                "last_partial": parts[-1].model_dump() if parts else None,
            }
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
