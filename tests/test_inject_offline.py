"""``sidegate inject -f``: every kind it accepts, List, multi-document files, pass-through."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest
import yaml

from extproc.inject.annotations import AnnotationError
from extproc.inject.offline import KINDS, dump_documents, inject_documents
from extproc.inject.settings import Settings
from extproc.quota.caller import WORKLOAD_ENV
from tests.isolation_cases import ACCEPTED_PARAMS, REFUSAL_PARAMS
from tests.k8s import semantic_problems, validate

SETTINGS = Settings()
POD_SPEC: dict[str, Any] = {
    "containers": [{"name": "app", "image": "registry.example.com/app:1"}],
}
JOB_SPEC: dict[str, Any] = {**POD_SPEC, "restartPolicy": "Never"}


def _template(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "chat"}}, "spec": copy.deepcopy(spec)}


def _workload(kind: str, api: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": "chat", "namespace": "apps"},
        "spec": spec,
    }


def _selector() -> dict[str, Any]:
    return {"selector": {"matchLabels": {"app": "chat"}}}


# kind -> (the object, the path from it to its pod)
OBJECTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "Pod": (
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "chat", "namespace": "apps"},
            "spec": copy.deepcopy(POD_SPEC),
        },
        (),
    ),
    "Deployment": (
        _workload("Deployment", "apps/v1", {**_selector(), "template": _template(POD_SPEC)}),
        ("spec", "template"),
    ),
    "StatefulSet": (
        _workload(
            "StatefulSet",
            "apps/v1",
            {**_selector(), "serviceName": "chat", "template": _template(POD_SPEC)},
        ),
        ("spec", "template"),
    ),
    "DaemonSet": (
        _workload("DaemonSet", "apps/v1", {**_selector(), "template": _template(POD_SPEC)}),
        ("spec", "template"),
    ),
    "ReplicaSet": (
        _workload("ReplicaSet", "apps/v1", {**_selector(), "template": _template(POD_SPEC)}),
        ("spec", "template"),
    ),
    "Job": (
        _workload("Job", "batch/v1", {"template": _template(JOB_SPEC)}),
        ("spec", "template"),
    ),
    "CronJob": (
        _workload(
            "CronJob",
            "batch/v1",
            {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": _template(JOB_SPEC)}}},
        ),
        ("spec", "jobTemplate", "spec", "template"),
    ),
}
UNTOUCHED = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "chat", "namespace": "apps"},
     "spec": {"ports": [{"port": 80}], "selector": {"app": "chat"}}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}},
    # A CRD that happens to be called Job: not ours to touch.
    {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": {"name": "v"},
     "spec": {"tasks": [{"template": _template(POD_SPEC)}]}},
]  # fmt: skip


def _at(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        obj = obj[key]
    return obj


def _names(pod: dict[str, Any], key: str) -> list[str]:
    return [c["name"] for c in pod["spec"].get(key) or []]


def _check_injected(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    pod = _at(obj, path)
    assert _names(pod, "initContainers") == ["sidegate-extproc", "sidegate-proxy"], obj["kind"]
    assert _names(pod, "containers") == ["app"]
    app_env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert app_env["OPENAI_BASE_URL"] == "http://127.0.0.1:14000/v1"
    assert "sidegate.io/status" in pod["metadata"]["annotations"]
    extproc = pod["spec"]["initContainers"][0]
    workload = {e["name"]: e.get("value") for e in extproc["env"]}[WORKLOAD_ENV]
    # The webhook names the workload after the pod's controller; offline must agree.
    assert workload == "apps/chat", obj["kind"]
    # Nothing used only to name the workload leaks into the template.
    assert "generateName" not in pod["metadata"] or obj["kind"] == "Pod"
    assert "ownerReferences" not in pod["metadata"]
    assert semantic_problems(pod) == []
    validate(obj, "1.37")


def test_every_accepted_kind_is_covered() -> None:
    assert set(KINDS) == {*OBJECTS, "List"}


@pytest.mark.parametrize("kind", list(OBJECTS))
def test_each_kind_is_injected(kind: str) -> None:
    obj, path = OBJECTS[kind]
    before = copy.deepcopy(obj)
    docs, notes = inject_documents(yaml.safe_dump(obj), SETTINGS, "default")
    assert notes == []
    assert len(docs) == 1
    _check_injected(docs[0], path)
    # Everything but the pod is as it was.
    rest, rest_before = copy.deepcopy(docs[0]), copy.deepcopy(before)
    if path:
        _at(rest, path[:-1]).pop(path[-1])
        _at(rest_before, path[:-1]).pop(path[-1])
        assert rest == rest_before
    else:
        assert rest["spec"]["containers"][0]["image"] == before["spec"]["containers"][0]["image"]
    # The output is YAML that reads back the same, and injecting it again changes nothing.
    text = dump_documents(docs)
    assert list(yaml.safe_load_all(text)) == docs
    again, _ = inject_documents(text, SETTINGS, "default")
    assert again == docs


def test_a_list_and_a_multi_document_file_through_the_cli() -> None:
    objects = [OBJECTS[k][0] for k in OBJECTS]
    listed = {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [*objects, *UNTOUCHED]}
    text = yaml.safe_dump_all([*objects, listed, *UNTOUCHED], sort_keys=False)
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "inject", "-f", "-", "-n", "apps"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = list(yaml.safe_load_all(r.stdout))
    n = len(objects)
    assert len(out) == n + 1 + len(UNTOUCHED)
    for doc, kind in zip(out[:n], OBJECTS, strict=True):
        _check_injected(doc, OBJECTS[kind][1])
    assert out[n]["kind"] == "List"
    for doc, kind in zip(out[n]["items"][:n], OBJECTS, strict=True):
        _check_injected(doc, OBJECTS[kind][1])
    assert out[n]["items"][n:] == UNTOUCHED
    assert out[n + 1 :] == UNTOUCHED
    # The foreign Job is named in a note, not silently skipped.
    assert "Job apps/v: not injected: apiVersion batch.volcano.sh/v1alpha1 is not batch/v1" in r.stderr


def test_skips_and_nothing_to_inject_are_reported() -> None:
    host = copy.deepcopy(OBJECTS["Deployment"][0])
    host["spec"]["template"]["spec"]["hostNetwork"] = True
    docs, notes = inject_documents(yaml.safe_dump(host), SETTINGS, "default")
    assert docs == [host]
    assert notes == [
        "Deployment apps/chat: not injected: hostNetwork pods share the node's network namespace"
    ]
    docs, notes = inject_documents(yaml.safe_dump(UNTOUCHED[0]), SETTINGS, "default")
    assert docs == [UNTOUCHED[0]] and notes[-1].startswith("nothing to inject")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Pod\n  bad: [indent", "not valid YAML"),
        (
            yaml.safe_dump(
                {**OBJECTS["Pod"][0], "metadata": {"name": "p", "namespace": "apps",
                 "annotations": {"sidegate.io/capture": "tproxy"}}}
            ),
            "Pod apps/p: annotation sidegate.io/capture: 'tproxy' is not one of",
        ),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(text: str, message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "inject", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert message in r.stderr and "Traceback" not in r.stderr


def _deployment(mutate: Any) -> dict[str, Any]:
    obj = copy.deepcopy(OBJECTS["Deployment"][0])
    mutate(obj["spec"]["template"]["spec"])
    return obj


@pytest.mark.parametrize(("mutate", "says"), REFUSAL_PARAMS)
def test_pods_that_reach_the_sidecars_are_refused(mutate: Any, says: tuple[str, ...]) -> None:
    with pytest.raises(AnnotationError) as e:
        inject_documents(yaml.safe_dump(_deployment(mutate)), SETTINGS, "default")
    problems = e.value.problems
    assert problems and all(p.startswith("Deployment apps/chat: ") for p in problems), problems
    for text in says:
        assert text in str(e.value), str(e.value)


@pytest.mark.parametrize("mutate", ACCEPTED_PARAMS)
def test_pods_close_to_a_refusal_are_injected(mutate: Any) -> None:
    docs, notes = inject_documents(yaml.safe_dump(_deployment(mutate)), SETTINGS, "default")
    assert notes == []
    _check_injected(docs[0], ("spec", "template"))
    again, _ = inject_documents(dump_documents(docs), SETTINGS, "default")
    assert again == docs


def test_a_refused_pod_fails_the_whole_file_through_the_cli() -> None:
    """Nothing is written when one object is refused: a half-injected file would be applied."""
    privileged = _deployment(lambda s: s["containers"][0].update(
        securityContext={"privileged": True}))  # fmt: skip
    privileged["metadata"]["name"] = "agent"
    text = yaml.safe_dump_all([OBJECTS["Pod"][0], privileged])
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "inject", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert (
        "Deployment apps/agent: container 'app': securityContext.privileged is true" in r.stderr
    )
    assert "Traceback" not in r.stderr
