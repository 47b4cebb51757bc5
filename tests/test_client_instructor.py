"""instructor on the openai SDK, configured by base URL only, through a real sidegate.

TOOLS mode (a forced function call), JSON mode (``json_object`` with the schema
in the prompt) and JSON_SCHEMA mode (``json_schema``), each streamed and not
where instructor can, on OpenAI- and Anthropic-backed models.
"""

from __future__ import annotations

from collections.abc import Iterator

import instructor
import openai
import pytest
from pydantic import BaseModel

from extproc.devtools.fake_provider import FakeProvider
from tests.client_gateway import CHAT_MODELS, client_doc, provider_of
from tests.harness import GatewayProcess


class Address(BaseModel):
    city: str
    zip_code: int


class User(BaseModel):
    name: str
    age: int
    verified: bool
    tags: list[str]
    address: Address


EXPECTED = User(
    name="test", age=1, verified=True, tags=["test"], address=Address(city="test", zip_code=1)
)


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(client_doc(fakes)).start()
    yield gw
    gw.stop()


def _client(gateway: GatewayProcess, mode: instructor.Mode) -> instructor.Instructor:
    sdk = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="app-placeholder", max_retries=0)
    return instructor.from_openai(sdk, mode=mode)


MODES = [instructor.Mode.TOOLS, instructor.Mode.JSON, instructor.Mode.JSON_SCHEMA]


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("mode", MODES, ids=[m.name for m in MODES])
def test_extract(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider], model: str, mode: instructor.Mode
) -> None:
    client = _client(gateway, mode)
    user, completion = client.chat.completions.create_with_completion(
        model=model,
        response_model=User,
        max_retries=0,  # a validation failure must fail the test, not be retried away
        messages=[{"role": "user", "content": "Jason is 25 and lives in Paris, 75001."}],
    )
    # instructor hands back an instance of a subclass it made of User.
    assert isinstance(user, User) and user.model_dump() == EXPECTED.model_dump()
    sent = provider_of(fakes, model).requests[-1].json()
    if model == "gpt-4o":
        return
    # On Anthropic models: a client tool call (TOOLS) or an answer in the content.
    choice = completion.choices[0]
    if mode is instructor.Mode.TOOLS:
        assert choice.finish_reason == "tool_calls" and sent["tool_choice"]["name"] == "User"
    else:
        assert choice.finish_reason == "stop" and choice.message.tool_calls is None
        assert User.model_validate_json(choice.message.content or "") == EXPECTED


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("mode", MODES, ids=[m.name for m in MODES])
def test_extract_partial_stream(
    gateway: GatewayProcess, model: str, mode: instructor.Mode
) -> None:
    client = _client(gateway, mode)
    parts = list(
        client.chat.completions.create_partial(
            model=model,
            response_model=User,
            max_retries=0,
            messages=[{"role": "user", "content": "Jason is 25 and lives in Paris, 75001."}],
        )
    )
    assert len(parts) > 1  # built up as the stream came
    assert User.model_validate(parts[-1].model_dump()) == EXPECTED
