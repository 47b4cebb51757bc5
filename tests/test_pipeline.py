"""The pipeline: its order in one list, steps that answer, what steps need, the table's bound."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from extproc import pipeline
from extproc.pipeline import Answer, Needs, RequestContext, Step
from extproc.stages.policy import PolicyStream
from tests.stage_harness import Reply, Routed, Stages
from tests.test_stages import AN_KEY, CHAT, DOC, OA_KEY, chat


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stages]:
    monkeypatch.setenv("SG_STAGE_OA", OA_KEY)
    monkeypatch.setenv("SG_STAGE_AN", AN_KEY)
    with Stages(DOC) as s:
        yield s


def test_the_order_is_one_list() -> None:
    names = [type(s).__name__ for s in pipeline.request_steps()]
    assert names == [
        "Validate",
        "CountTokens",
        "Route",
        "AuditGate",
        "ResponsesState",
        "IdentifyCaller",
        "AdmitQuotas",
    ]


class CachedAnswer(Step):
    """A step that answers by itself (as a cache lookup would), after routing."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def run(self, ctx: RequestContext) -> Answer | None:
        assert ctx.plan is not None  # runs after the route step
        self.seen.append(ctx.model)
        if ctx.body.get("user") != "cached":
            return None
        return Answer(200, b'{"cached": true}', "sidegate_cache", {"x-cache": "hit"})


def test_a_step_can_answer_and_the_later_steps_do_not_run(
    stages: Stages, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = CachedAnswer()
    steps = list(pipeline.request_steps())
    steps.insert([type(s).__name__ for s in steps].index("Route") + 1, cached)
    monkeypatch.setattr(PolicyStream, "steps", tuple(steps))
    # "gpt" has a quota of one request per user: had admission run, the second would be a 429.
    for _ in range(2):
        reply, stream = stages.policy(CHAT, chat("gpt", user="cached"))
        stream.close()
        assert isinstance(reply, Reply)
        assert (reply.status, reply.headers["x-cache"], json.loads(reply.body)) == (
            200,
            "hit",
            {"cached": True},
        )
    routed, stream = stages.policy(CHAT, chat("gpt", user="someone"))
    assert isinstance(routed, Routed)
    stages.finish(stream)
    assert cached.seen == ["gpt", "gpt", "gpt"]


def test_a_refusal_from_a_step_comes_in_the_callers_format(stages: Stages) -> None:
    reply, stream = stages.policy("/anthropic/v1/messages", chat("nope", max_tokens=5))
    stream.close()
    assert isinstance(reply, Reply) and reply.status == 404
    assert reply.json()["type"] == "error" and reply.json()["error"]["type"] == "not_found_error"


def test_what_the_pipeline_needs_is_the_union_of_its_parts(stages: Stages) -> None:
    parts = [*pipeline.request_steps(), *pipeline.completion_listeners(stages.gateway)]
    assert pipeline.needs(parts) == Needs.REQUEST_BODY | Needs.USAGE


def test_the_request_table_has_a_bound(stages: Stages) -> None:
    stages.gateway.requests.limit = 1
    first, held = stages.policy(CHAT, chat("smart"))
    assert isinstance(first, Routed)
    reply, stream = stages.policy(CHAT, chat("smart"))
    stream.close()
    assert isinstance(reply, Reply) and reply.status == 503
    assert reply.headers["retry-after"] == "1"
    assert "too many requests in flight" in reply.json()["error"]["message"]
    stages.finish(held)
    again, stream = stages.policy(CHAT, chat("smart"))
    assert isinstance(again, Routed)
    stages.finish(stream)


class Header(Step):
    """A step that reads only the request's headers."""

    needs = Needs.NOTHING

    async def run(self, ctx: RequestContext) -> Answer | None:
        return None


def test_the_processing_modes_follow_from_what_the_parts_need() -> None:
    assert pipeline.policy_mode([Header()])["request_body_mode"] == "NONE"
    assert pipeline.policy_mode([Header(), *pipeline.request_steps()])["request_body_mode"] == (
        "BUFFERED"
    )
    # Nothing reads the response: Envoy sends none of it.
    quiet = pipeline.provider_mode(Needs.NOTHING)
    assert (quiet["response_header_mode"], quiet["response_body_mode"]) == ("SKIP", "NONE")
    assert pipeline.provider_mode(Needs.RESPONSE_HEADERS)["response_body_mode"] == "NONE"
    read = pipeline.provider_mode(Needs.USAGE)
    assert (read["response_body_mode"], read["response_trailer_mode"]) == (
        "FULL_DUPLEX_STREAMED",
        "SEND",
    )
    # Every provider mode replaces the request from its headers reply.
    assert {quiet["request_body_mode"], read["request_body_mode"]} == {"NONE"}


def test_the_bootstrap_takes_its_modes_from_the_pipeline(stages: Stages) -> None:
    from extproc.envoy.bootstrap import render_bootstrap
    from extproc.stages.provider import ProviderStream

    b = render_bootstrap(stages.config, "/s.sock")
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][-1]["typed_config"]
    (policy_filter,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc"]
    policy = policy_filter["typed_config"]["processing_mode"]
    assert policy == pipeline.policy_mode(PolicyStream.steps)
    cluster = b["static_resources"]["clusters"][1]
    opts = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    provider = opts["http_filters"][0]["typed_config"]["processing_mode"]
    wanted = ProviderStream.needs | pipeline.needs(pipeline.COMPLETION)
    assert provider == pipeline.provider_mode(wanted)
