"""The output and exit code of ``sidegate audit verify``.

Exit codes: 0 the chain is intact; 1 problems found (each printed as
``FILE:LINE: what``); 2 a file or the chain key could not be read, or the
chain is keyed and no key was given (or the other way round).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import ConfigError, KeySource
from .audit_log import read_chain_key
from .verify import KeyMismatch, verify

INTACT, TAMPERED, UNREADABLE = 0, 1, 2


def run_verify(
    files: list[str],
    partial: bool = False,
    key_env: str | None = None,
    key_file: str | None = None,
) -> int:
    try:
        key = read_chain_key(KeySource(env=key_env, file=key_file) if key_env or key_file else None)
        report = verify([Path(f) for f in files], partial=partial, key=key)
    except OSError as e:
        print(f"sidegate audit verify: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return UNREADABLE
    except (ConfigError, KeyMismatch) as e:
        print(f"sidegate audit verify: {e}", file=sys.stderr)
        return UNREADABLE
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(problem)
    span = f"seq {report.first_seq}..{report.last_seq}" if report.first_seq is not None else "empty"
    summary = f"{report.records} records in {report.files} files ({span})"
    if report.intact:
        print(f"OK: {summary}: the chain is intact")
        return INTACT
    print(f"TAMPERED: {summary}: {len(report.problems)} problems", file=sys.stderr)
    return TAMPERED
