"""Under ``CI=true`` no test may skip for want of something CI installs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent
_SKIPS = re.compile(r"pytest\.skip\(|\bskipif\b|importorskip|pytest\.mark\.skip\b|\.xfail\b")


def _pytest(args: list[str], ci: str | None, prelude: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    code = f"{prelude}\nimport sys, pytest\nsys.exit(pytest.main({args!r}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_skip_goes_through_skip_or_fail() -> None:
    """A bare skip would turn CI green by running less; tests.ci.skip_or_fail fails there."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted(HERE.rglob("*.py"))
        if path.name not in ("ci.py", "test_ci.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _SKIPS.search(line)
    ]
    assert offenders == [], "use tests.ci.skip_or_fail instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize(("ci", "outcome"), [("false", "1 skipped"), ("true", "1 failed")])
def test_skip_or_fail(tmp_path: Path, ci: str | None, outcome: str) -> None:
    test = tmp_path / "test_needs_tool.py"
    test.write_text(
        "from tests.ci import skip_or_fail\n\n"
        "def test_needs_tool() -> None:\n"
        "    skip_or_fail('needs a tool')\n"
    )
    r = _pytest(["-q", "-p", "no:cacheprovider", "-rsf", str(test)], ci)
    assert outcome in r.stdout, r.stdout + r.stderr
    assert "needs a tool" in r.stdout


# Under CI the module's setup fails: pytest reports that as errors, and exits 1.
@pytest.mark.parametrize(("ci", "outcome"), [(None, "skipped"), ("true", "errors")])
def test_the_pod_simulation_without_root(ci: str | None, outcome: str) -> None:
    """As a non-root user: skipped on a laptop, failed under CI (CI runs it as root)."""
    source = (HERE / "test_pod_simulation.py").read_text()
    outcome = f"{len(re.findall(r'^def test_', source, re.M))} {outcome}"
    r = _pytest(
        ["-q", "-p", "no:cacheprovider", "-rsf", "tests/test_pod_simulation.py"],
        ci,
        prelude="import os\nos.geteuid = lambda: 1000",
    )
    assert outcome in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert "needs root" in r.stdout
    assert r.returncode == (0 if ci is None else 1)
