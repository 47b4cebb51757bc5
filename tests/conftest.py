from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.harness import GatewayProcess, env_keys
from tests.redisd import RedisServer, require_redis
from tests.secret_scan import PRODUCED, LogCollector

KEYS = {
    "SG_TEST_OA_KEY": "sk-test-oa-secret",
    "SG_TEST_OB_KEY": "sk-test-ob-secret",
    "SG_TEST_AN_KEY": "sk-ant-test-an-secret",
    "SG_TEST_BN_KEY": "sk-ant-test-bn-secret",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The scan for keys runs last: it reads what every other test produced."""
    items.sort(key=lambda item: item.path.name == "test_no_secrets.py")


@pytest.fixture(scope="session", autouse=True)
def _produced() -> Iterator[None]:
    """Collect every log record the suite emits, for ``test_no_secrets``."""
    PRODUCED.keys.update(KEYS.values())
    collector = LogCollector()
    logging.getLogger().addHandler(collector)
    yield
    logging.getLogger().removeHandler(collector)


@pytest.fixture(autouse=True)
def _sdk_clients_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every SDK client a test (or a function-scoped fixture) makes is closed when it ends.

    With warnings as errors, a client left to the garbage collector fails
    whichever later test is running when its socket is collected. Clients of
    wider-scoped fixtures are made before this runs and close themselves.
    """
    made: list[Any] = []
    for cls in (openai.OpenAI, anthropic.Anthropic):
        original = cls.__init__

        def init(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            _original(self, *args, **kwargs)
            made.append(self)

        monkeypatch.setattr(cls, "__init__", init)
    yield
    for client in made:
        client.close()


@pytest.fixture(scope="session")
def fakes() -> Iterator[dict[str, FakeProvider]]:
    env_keys(**KEYS)
    providers = {
        "oa": FakeProvider(api="openai", name="oa", key=KEYS["SG_TEST_OA_KEY"]).start(),
        "ob": FakeProvider(api="openai", name="ob", key=KEYS["SG_TEST_OB_KEY"]).start(),
        "an": FakeProvider(api="anthropic", name="an", key=KEYS["SG_TEST_AN_KEY"]).start(),
        "bn": FakeProvider(api="anthropic", name="bn", key=KEYS["SG_TEST_BN_KEY"]).start(),
    }
    yield providers
    for f in providers.values():
        f.stop()


def gateway_doc(fakes: dict[str, FakeProvider]) -> dict[str, Any]:
    def provider(name: str) -> dict[str, Any]:
        fake = fakes[name]
        return {
            "api": fake.api,
            "base_url": fake.base_url,
            "keys": [{"env": f"SG_TEST_{name.upper()}_KEY"}],
        }

    return {
        "providers": {
            # openai-a serves the Responses API itself; openai-b answers chat
            # completions only (the default for a host other than OpenAI's).
            "openai-a": {**provider("oa"), "responses": "native"},
            "openai-b": provider("ob"),
            "anthropic-a": provider("an"),
            "anthropic-b": provider("bn"),
        },
        "models": {
            "gpt-4o": {
                "provider": "openai-a",
                "id": "gpt-4o-2024-08-06",
                "price": {"input_per_mtok": 2.5, "output_per_mtok": 10},
            },
            "gpt-4o-b": {"provider": "openai-b", "id": "gpt-4o-2024-11-20"},
            "claude-sonnet": {
                "provider": "anthropic-a",
                "id": "claude-sonnet-4-5",
                "context_window": 200000,
            },
            "claude-sonnet-b": {"provider": "anthropic-b", "id": "claude-sonnet-4-5-backup"},
            "claude-haiku": {"provider": "anthropic-a", "id": "claude-haiku-4-5"},
            "embed": {"provider": "openai-a", "id": "text-embedding-3-small", "embeddings": True},
        },
        "routes": {
            # OpenAI clients: Anthropic first, OpenAI as the fallback (cross-API failover).
            "smart": [["claude-sonnet"], ["gpt-4o"]],
            "fast": [["gpt-4o"], ["gpt-4o-b"]],
            "claude": [["claude-sonnet"], ["claude-sonnet-b"]],
            # One provider in two groups: the attempt number decides the model id.
            "downgrade": [["claude-sonnet"], ["claude-haiku"]],
        },
        "timeouts": {"first_byte": "1s", "retry_base": "10ms", "retry_max": "50ms"},
        # The fakes' fault headers are app headers like any other: allowed.
        "forward_headers": {"allow": ["x-fake-fault-*"]},
    }


@pytest.fixture(scope="session")
def gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(gateway_doc(fakes)).start()
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    """The official openai SDK, configured by base URL only."""
    # The app's own key is a placeholder: sidegate must never forward it. Closed
    # after the test, so no pooled connection is left for the garbage collector.
    with openai.OpenAI(
        base_url=f"{gateway.base}/v1", api_key="app-placeholder", max_retries=0
    ) as c:
        yield c


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    if "fakes" in request.fixturenames:
        for f in request.getfixturevalue("fakes").values():
            f.requests.clear()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    require_redis()
    server = RedisServer().start()
    yield server
    server.stop()
