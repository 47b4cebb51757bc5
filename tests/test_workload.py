"""The workload name quotas key a pod by, from the pod as the API server admits it."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.inject.workload import workload_name


def pod(**meta: Any) -> dict[str, Any]:
    return {"metadata": meta, "spec": {}}


def owner(kind: str, name: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "apps/v1", "kind": kind, "name": name, "controller": True, "uid": "u"}]


CASES = [
    (
        "deployment replica",
        pod(
            generateName="chat-7d4b9c-",
            labels={"pod-template-hash": "7d4b9c"},
            ownerReferences=owner("ReplicaSet", "chat-7d4b9c"),
        ),
        "apps/chat",
    ),
    (
        "bare replicaset",
        pod(generateName="rs-", ownerReferences=owner("ReplicaSet", "rs")),
        "apps/rs",
    ),
    ("statefulset", pod(name="db-0", ownerReferences=owner("StatefulSet", "db")), "apps/db"),
    (
        "cronjob's job",
        pod(generateName="nightly-29412000-", ownerReferences=owner("Job", "nightly-29412000")),
        "apps/nightly",
    ),
    ("plain job", pod(generateName="once-", ownerReferences=owner("Job", "once")), "apps/once"),
    ("generateName only", pod(generateName="worker-"), "apps/worker"),
    ("named pod", pod(name="debug"), "apps/debug"),
    (
        "non-controller owner is ignored",
        pod(
            name="p",
            ownerReferences=[{"kind": "ConfigMap", "name": "x", "controller": False}],
        ),
        "apps/p",
    ),
]


@pytest.mark.parametrize(("p", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_workload_name(p: dict[str, Any], expected: str) -> None:
    assert workload_name(p, "apps") == expected
