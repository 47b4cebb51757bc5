"""The pipeline: its order in one list, steps that answer, what steps need, the table's bound."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from extproc import pipeline
from extproc.pipeline import Answer, Needs, RequestContext, Step
from extproc.policy import PolicyStream
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
    assert names == ["Validate", "Route", "IdentifyCaller", "AdmitQuotas"]


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
    steps.insert(2, cached)
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
