"""What the suite produced (logs, spans, audit records) and a scan of it for provider keys.

Everything is registered as the suite runs: every Python log record (a
handler on the root logger, from ``conftest``), each test gateway's Envoy log
and its keys (``harness``), every span and log record an OTLP receiver got
(``otlp_receiver``),
and the audit files under pytest's temporary directory. ``test_no_secrets``
runs last and scans it all.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("log", "span", "audit")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    source: str
    key_name: str

    def __str__(self) -> str:
        return f"{self.kind} from {self.source} holds the key {self.key_name}"


@dataclass
class Produced:
    # kind, source, text, how many records the text holds
    texts: list[tuple[str, str, str, int]] = field(default_factory=list)
    files: list[tuple[str, str, Path]] = field(default_factory=list)  # kind, source, path
    keys: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def text(self, kind: str, source: str, text: str, records: int = 1) -> None:
        assert kind in KINDS, kind
        with self._lock:
            # Whole: a scan of a cut text would miss what was cut.
            self.texts.append((kind, source, text, records))

    def file(self, kind: str, source: str, path: Path) -> None:
        assert kind in KINDS, kind
        with self._lock:
            self.files.append((kind, source, path))


PRODUCED = Produced()


class LogCollector(logging.Handler):
    """Every log record any logger emits, formatted as it would be printed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            PRODUCED.text("log", record.name, self.format(record))
        except Exception:  # a record that cannot be formatted is the logger's problem
            self.handleError(record)


def audit_lines(text: str) -> list[str]:
    """The lines of ``text`` that are audit records (a sealed JSON object)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{") and '"hash":' in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and {"hash", "prev", "seq"} <= record.keys():
                out.append(line)
    return out


@dataclass
class Scan:
    counts: Counter[str] = field(default_factory=Counter)  # records scanned, by kind
    findings: list[Finding] = field(default_factory=list)


def scan(
    texts: Iterable[tuple[str, str, str, int]],
    files: Iterable[tuple[str, str, Path]],
    keys: dict[str, str],
) -> Scan:
    """Count the records of each kind and find any key (by name) in any of them.

    A file counts one record per line; an audit file only its sealed lines.
    """
    result = Scan()
    wanted = {name: value.encode() for name, value in keys.items() if value}

    def look(kind: str, source: str, data: bytes, records: int) -> None:
        result.counts[kind] += records
        for name, value in wanted.items():
            if value in data:
                result.findings.append(Finding(kind, source, name))

    for kind, source, text, records in texts:
        look(kind, source, text.encode(errors="replace"), records)
    for kind, source, path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue  # removed with its test's directory: it was scanned there or never written
        lines = data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
        if kind == "audit":
            lines = len(audit_lines(data.decode(errors="replace")))
        look(kind, source, data, lines)
    return result
