"""The output and exit code of ``sidegate audit verify``.

Exit codes: 0 the chain is intact; 1 problems found (each printed as
``FILE:LINE: what``); 2 a file could not be read.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .verify import verify

INTACT, TAMPERED, UNREADABLE = 0, 1, 2


def run_verify(files: list[str], partial: bool = False) -> int:
    try:
        report = verify([Path(f) for f in files], partial=partial)
    except OSError as e:
        print(f"sidegate audit verify: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
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
