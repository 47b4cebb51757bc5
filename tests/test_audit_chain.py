"""The audit chain on disk: rotation, restarts, torn tails, and what `audit verify` names.

The log is written by the real writer thread and file sink; each tampering is
done on a copy of it, the way someone with access to the files would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from extproc.audit import config
from extproc.audit.audit_log import build_sinks
from extproc.audit.chain import GENESIS
from extproc.audit.file_sink import rotated_files
from extproc.audit.verify import verify
from extproc.audit.writer import AuditWriter
from extproc.cli import main


def _write_log(path: Path, count: int, *, max_bytes: int = 4096, max_files: int = 10) -> None:
    cfg = config.AuditConfig(
        file=config.FileSink(str(path), max_bytes=max_bytes, max_files=max_files)
    )
    writer = AuditWriter(cfg, build_sinks(cfg))
    writer.start()
    for i in range(count):
        waiter = writer.submit(
            {"v": 1, "kind": "request", "request_id": f"r{i}", "pad": "x" * 300}, wait=True
        )
        assert waiter is not None and waiter.result(5), "the durable write failed"
    writer.close()


def _files(path: Path) -> list[Path]:
    return [p for _, p in rotated_files(path)] + [path]


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for f in _files(path) for line in f.read_bytes().splitlines()]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 40)
    return path


def _problems(path: Path, **kw: bool) -> list[str]:
    return [str(p) for p in verify(_files(path), **kw).problems]


def test_rotation_keeps_one_chain_across_files(log: Path) -> None:
    files = _files(log)
    assert len(files) >= 4, files
    records = _records(log)
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert records[0]["kind"] == "start" and records[0]["prev"] == GENESIS
    assert sum(r["kind"] == "request" for r in records) == 40
    report = verify(files)
    assert report.intact, report.problems
    assert report.records == len(records)


def test_a_restart_goes_on_with_the_chain(log: Path) -> None:
    before = _records(log)
    _write_log(log, 3)
    after = _records(log)
    assert after[: len(before)] == before
    assert after[len(before)]["kind"] == "start"
    assert after[len(before)]["prev"] == before[-1]["hash"]
    assert verify(_files(log)).intact


def test_a_torn_last_line_is_cut_off_and_said(log: Path) -> None:
    torn = b'{"v":1,"kind":"request","request_id":"half'
    with log.open("ab") as f:
        f.write(torn)
    _write_log(log, 1)
    records = _records(log)
    recovered = [r for r in records if r["kind"] == "recovered"]
    assert len(recovered) == 1 and recovered[0]["torn_bytes"] == len(torn)
    report = verify(_files(log))
    assert report.intact, report.problems
    assert any(f"torn record of {len(torn)} bytes" in n for n in report.notes)


def test_pruned_files_are_accounted_for(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 60, max_files=2)
    assert len(rotated_files(path)) == 2
    records = _records(path)
    assert records[0]["seq"] > 0
    assert any(r["kind"] == "pruned" for r in records)
    report = verify(_files(path))
    assert report.intact, report.problems
    assert any("rotation removed the records before it" in n for n in report.notes)


def _line_of(path: Path, request_id: str) -> tuple[Path, int]:
    for f in _files(path):
        for n, line in enumerate(f.read_bytes().splitlines(), 1):
            if f'"request_id":"{request_id}"'.encode() in line:
                return f, n
    raise AssertionError(f"no record of {request_id}")


def _edit(f: Path, change: callable) -> None:  # type: ignore[valid-type]
    lines = f.read_bytes().splitlines(keepends=True)
    f.write_bytes(b"".join(change(lines)))


def test_an_edited_record_is_named(log: Path) -> None:
    f, n = _line_of(log, "r7")
    _edit(
        f, lambda ls: [x.replace(b'"r7"', b'"r8"') if i == n - 1 else x for i, x in enumerate(ls)]
    )
    problems = _problems(log)
    assert (
        len(problems) == 1 and problems[0].startswith(f"{f}:{n}: ") and "edited" in problems[0]
    ), problems


def test_an_edited_and_rehashed_record_is_named(log: Path) -> None:
    from extproc.audit.chain import CHAIN_FIELDS, canonical, digest

    f, n = _line_of(log, "r7")

    def rehash(lines: list[bytes]) -> list[bytes]:
        rec = json.loads(lines[n - 1])
        rec["request_id"] = "forged"
        body = {k: v for k, v in rec.items() if k not in CHAIN_FIELDS}
        rec["hash"] = digest(rec["prev"], rec["seq"], canonical(body))
        lines[n - 1] = json.dumps(rec).encode() + b"\n"
        return lines

    _edit(f, rehash)
    problems = _problems(log)
    assert (
        len(problems) == 1 and problems[0].startswith(f"{f}:{n}: ") and "altered" in problems[0]
    ), problems


def test_a_deleted_record_is_named(log: Path) -> None:
    f, n = _line_of(log, "r7")
    _edit(f, lambda ls: ls[: n - 1] + ls[n:])
    problems = _problems(log)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{f}:{n}: 1 records") and "deleted" in problems[0]


def test_an_inserted_copy_is_named(log: Path) -> None:
    f, n = _line_of(log, "r7")
    _edit(f, lambda ls: [*ls[:n], ls[n - 1], *ls[n:]])
    problems = _problems(log)
    assert (
        len(problems) == 1 and problems[0].startswith(f"{f}:{n + 1}: ") and "copy" in problems[0]
    ), problems


def test_an_inserted_forged_record_is_named(log: Path) -> None:
    from extproc.audit.chain import canonical, digest

    f, n = _line_of(log, "r7")

    def insert(lines: list[bytes]) -> list[bytes]:
        before = json.loads(lines[n - 1])
        body = {"v": 1, "kind": "request", "request_id": "forged"}
        seq = before["seq"] + 1
        h = digest(before["hash"], seq, canonical(body))
        forged = (
            json.dumps({**body, "hash": h, "prev": before["hash"], "seq": seq}).encode() + b"\n"
        )
        return [*lines[:n], forged, *lines[n:]]

    _edit(f, insert)
    problems = _problems(log)
    assert (
        len(problems) == 1
        and problems[0].startswith(f"{f}:{n + 1}: ")
        and "inserted" in problems[0]
    ), problems


def test_reordered_records_are_named(log: Path) -> None:
    f, n = _line_of(log, "r7")
    _edit(f, lambda ls: [*ls[: n - 1], ls[n], ls[n - 1], *ls[n + 1 :]])
    problems = _problems(log)
    assert (
        len(problems) == 1
        and problems[0].startswith(f"{f}:{n + 1}: ")
        and "reordered" in problems[0]
    ), problems


def test_a_deleted_middle_file_is_named(log: Path) -> None:
    files = _files(log)
    files[1].unlink()
    problems = _problems(log)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{files[2]}:1: ") and "file was deleted" in problems[0]


def test_a_deleted_first_file_is_named_unless_partial(log: Path) -> None:
    files = _files(log)
    files[0].unlink()
    problems = _problems(log)
    assert (
        len(problems) == 1
        and problems[0].startswith(f"{files[1]}:1: ")
        and "at the start" in problems[0]
    )
    assert _problems(log, partial=True) == []


def test_cli_exit_codes(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(f) for f in reversed(_files(log))]  # any order
    assert main(["audit", "verify", *args]) == 0
    assert "the chain is intact" in capsys.readouterr().out
    copy = tmp_path / "copy"
    shutil.copytree(log.parent, copy, ignore=shutil.ignore_patterns("copy"))
    f, n = _line_of(copy / log.name, "r3")
    _edit(f, lambda ls: ls[: n - 1] + ls[n:])
    assert main(["audit", "verify", *map(str, _files(copy / log.name))]) == 1
    assert f"{f}:{n}:" in capsys.readouterr().out
    assert main(["audit", "verify", str(tmp_path / "missing")]) == 2


CHAIN_KEY = "audit-chain-key-for-tests-0123456789"


def test_a_keyed_chain_cannot_be_rehashed_without_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from extproc.audit.chain import CHAIN_FIELDS, canonical, digest
    from extproc.config import KeySource

    monkeypatch.setenv("SG_TEST_AUDIT_CHAIN_KEY", CHAIN_KEY)
    path = tmp_path / "audit.jsonl"
    cfg = config.AuditConfig(
        file=config.FileSink(str(path)), chain_key=KeySource(env="SG_TEST_AUDIT_CHAIN_KEY")
    )
    writer = AuditWriter(cfg, build_sinks(cfg))
    writer.start()
    for i in range(5):
        waiter = writer.submit({"v": 1, "kind": "request", "request_id": f"k{i}"}, wait=True)
        assert waiter is not None and waiter.result(5)
    writer.close()
    records = _records(path)
    assert records[0]["mac"] == "hmac-sha256" and CHAIN_KEY not in path.read_text()
    key = ["--key-env", "SG_TEST_AUDIT_CHAIN_KEY"]
    assert main(["audit", "verify", *key, str(path)]) == 0
    # Without the key: told to pass it, not a list of "edited" records.
    assert main(["audit", "verify", str(path)]) == 2
    assert "hmac-sha256: pass its key" in capsys.readouterr().err

    # An edit re-hashed the plain way, as anyone without the key could, is caught.
    lines = path.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[3])
    rec["request_id"] = "forged"
    body = {k: v for k, v in rec.items() if k not in CHAIN_FIELDS}
    rec["hash"] = digest(rec["prev"], rec["seq"], canonical(body))
    lines[3] = json.dumps(rec).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    assert main(["audit", "verify", *key, str(path)]) == 1
    assert f"{path}:4: record seq 3: its content does not match" in capsys.readouterr().out
