"""``sidegate audit verify``: check a chain across its files and name each broken record.

Files are put in chain order by the ``seq`` of their first record, so
``audit.jsonl*`` in any order works. Each record is checked against its own
hash, then against the record before it:

- content that does not match its hash: the record was **edited**;
- the next ``seq`` but another ``prev``: the record before was edited and
  re-hashed (nothing chains to it any more);
- a ``seq`` seen before: a **copy**, or an **inserted** record;
- ``seq`` jumping ahead: records **deleted** (a whole file, when the jump is
  at a file boundary), unless the missing ones turn up later, **reordered**;
- a log that begins past ``seq`` 0: fine when a ``pruned`` record says
  rotation removed the records before it, else a file at the start was
  **deleted**.

What no chain can show: records cut from the very end. Keep an off-box copy
(the stdout or OTLP sink) to compare the last ``seq`` with.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chain import GENESIS, Edited, Link, check_line, mac_name

# Recent records remembered to tell a reorder from an edit; a chain reordered
# over a longer span is still reported, as missing and out-of-order records.
WINDOW = 100_000
MAX_PROBLEMS = 1000
MAX_LINE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Problem:
    at: Position
    message: str

    def __str__(self) -> str:
        return f"{self.at}: {self.message}"


@dataclass(slots=True)
class Report:
    files: int = 0
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class _Gap:
    low: int
    high: int
    before: Position  # the record after the hole
    after: Position | None  # the record before it
    across_files: bool


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        yield from enumerate(iter(lambda: f.readline(MAX_LINE), b""), 1)


def _claimed(line: bytes) -> tuple[dict[str, Any], Link | None, str]:
    """A line's record and the link it claims, whether or not its hash holds."""
    try:
        record = json.loads(line)
    except ValueError:
        return {}, None, ""
    if not isinstance(record, dict):
        return {}, None, ""
    h, prev, seq = record.get("hash"), record.get("prev"), record.get("seq")
    if isinstance(h, str) and isinstance(prev, str) and type(seq) is int and seq >= 0:
        return record, Link(seq, h), prev
    return record, None, ""


def _first_seq(path: Path) -> int | None:
    for _, line in _lines(path):
        _, link, _ = _claimed(line)
        if link is not None:
            return link.seq
    return None


class KeyMismatch(Exception):
    """The log's chain is made another way than the key given (or not given) says."""


def order_files(paths: Sequence[Path]) -> list[Path]:
    """Chain order: by the seq of each file's first record; files without one last."""
    keyed = [(_first_seq(p), i, p) for i, p in enumerate(paths)]
    return [p for seq, _, p in sorted(keyed, key=lambda k: (k[0] is None, k[0] or 0, k[1]))]


class _Verifier:
    def __init__(self, partial: bool, key: bytes | None) -> None:
        self.partial = partial
        self.key = key
        self.report = Report()
        self.prev: Link | None = None
        self.prev_at: Position | None = None
        self.by_seq: OrderedDict[int, tuple[str, Position]] = OrderedDict()
        self.by_hash: OrderedDict[str, Position] = OrderedDict()
        self.gaps: list[_Gap] = []
        self.start: tuple[int, str, Position] | None = None
        self.pruned: dict[tuple[int, str], Position] = {}
        self.file_start = False
        self.files: list[str] = []

    def problem(self, at: Position, message: str) -> None:
        if len(self.report.problems) < MAX_PROBLEMS:
            self.report.problems.append(Problem(at, message))

    def remember(self, link: Link, at: Position) -> None:
        self.by_seq[link.seq] = (link.hash, at)
        self.by_hash[link.hash] = at
        for table in (self.by_seq, self.by_hash):
            while len(table) > WINDOW:
                table.popitem(last=False)

    def feed(self, at: Position, line: bytes) -> None:
        if not line.endswith(b"\n"):
            self.problem(
                at, "the last line is incomplete (a write cut short, or the file truncated)"
            )
            return
        try:
            record, link, prev = check_line(line, self.key)
        except Edited as e:
            mac = e.record.get("mac")
            if e.record.get("kind") == "start" and mac != mac_name(self.key):
                hint = (
                    "pass its key (--key-env or --key-file)"
                    if self.key is None
                    else "verify it without a key"
                )
                raise KeyMismatch(f"{at}: the chain is made with {mac}: {hint}") from None
            self.problem(at, f"record seq {e.link.seq}: {e}")
            record, link, prev = e.record, e.link, e.prev
        except ValueError as e:
            self.problem(
                at, f"{e}: a line that is not an audit record was inserted, or one destroyed"
            )
            return
        self.report.records += 1
        rep = self.report
        rep.first_seq = link.seq if rep.first_seq is None else min(rep.first_seq, link.seq)
        rep.last_seq = link.seq if rep.last_seq is None else max(rep.last_seq, link.seq)
        if record.get("kind") == "pruned":
            last_seq, last_hash = record.get("last_seq"), record.get("last_hash")
            if isinstance(last_seq, int) and isinstance(last_hash, str):
                self.pruned[(last_seq, last_hash)] = at
        elif record.get("kind") == "lost":
            rep.notes.append(
                f"{at}: {record.get('count')} records lost from {record.get('since')}: "
                f"{record.get('reason')}"
            )
        elif record.get("kind") == "recovered":
            rep.notes.append(
                f"{at}: a torn record of {record.get('torn_bytes')} bytes was cut off at a restart"
            )
        self.link(at, link, prev)

    def link(self, at: Position, link: Link, prev: str) -> None:
        before, before_at = self.prev, self.prev_at
        seen = self.by_seq.get(link.seq)
        if before is None:
            if link.seq != 0 or prev != GENESIS:
                self.start = (link.seq, prev, at)
        elif link.seq == 0 and prev == GENESIS:
            self.problem(at, "a new chain begins here: the records before it belong to another log")
        elif link.seq == before.seq + 1:
            if prev != before.hash:
                if prev in self.by_hash:
                    self.problem(
                        at,
                        f"record seq {link.seq} follows {self.by_hash[prev]}, not the line "
                        "before it: records were reordered",
                    )
                else:
                    assert before_at is not None
                    self.problem(
                        before_at,
                        f"record seq {before.seq} was altered (and re-hashed): the next "
                        f"record, {at}, was chained to another",
                    )
        elif link.seq > before.seq + 1:
            self.gaps.append(_Gap(before.seq + 1, link.seq - 1, at, before_at, self.file_start))
        elif seen is not None and seen[0] == link.hash:
            self.problem(at, f"record seq {link.seq} is a copy of {seen[1]}: inserted")
            return  # the chain goes on from the original
        elif seen is not None:
            if before.seq == link.seq and before_at is not None and prev != before.hash:
                self.problem(
                    before_at,
                    f"record seq {link.seq} was inserted: the real one follows at {at}, "
                    "chained to the record before it",
                )
            else:
                self.problem(
                    at, f"a second record seq {link.seq} (the first is at {seen[1]}): inserted"
                )
        elif self._fills_gap(link.seq, at):
            return  # reported; the chain goes on from the record before it
        else:
            self.problem(at, f"record seq {link.seq} comes after seq {before.seq}: out of order")
        self.prev, self.prev_at = link, at
        self.remember(link, at)

    def _fills_gap(self, seq: int, at: Position) -> bool:
        for i, gap in enumerate(self.gaps):
            if gap.low <= seq <= gap.high:
                self.problem(
                    at, f"record seq {seq} belongs before {gap.before}: records were reordered"
                )
                parts = []
                if gap.low < seq:
                    parts.append(_Gap(gap.low, seq - 1, gap.before, gap.after, gap.across_files))
                if seq < gap.high:
                    parts.append(_Gap(seq + 1, gap.high, gap.before, gap.after, gap.across_files))
                self.gaps[i : i + 1] = parts
                return True
        return False

    def finish(self) -> Report:
        for gap in self.gaps:
            what = f"seq {gap.low}" if gap.low == gap.high else f"seq {gap.low}..{gap.high}"
            count = gap.high - gap.low + 1
            if gap.across_files:
                self.problem(
                    gap.before,
                    f"{count} records ({what}) are missing between {gap.after} and this file: "
                    "a file was deleted or cut short",
                )
            else:
                self.problem(
                    gap.before, f"{count} records ({what}) are missing before this line: deleted"
                )
        if self.start is not None:
            seq, prev, at = self.start
            pruned = self.pruned.get((seq - 1, prev))
            if pruned is not None:
                self.report.notes.append(
                    f"the log begins at seq {seq}: rotation removed the records before it "
                    f"({pruned})"
                )
            elif self.partial:
                self.report.notes.append(f"the log begins at seq {seq} (--partial)")
            else:
                self.problem(
                    at,
                    f"the log begins at seq {seq} and no `pruned` record accounts for the "
                    "records before it: a file at the start was deleted (pass --partial to "
                    "check a part of a log)",
                )
        order = {name: i for i, name in enumerate(self.files)}
        self.report.problems.sort(key=lambda p: (order.get(p.at.file, 0), p.at.line))
        return self.report


def verify(paths: Sequence[Path], partial: bool = False, key: bytes | None = None) -> Report:
    """Check the chain across ``paths`` (keyed with ``key``, if its records were).

    Raises OSError for a file that cannot be read, KeyMismatch when the chain
    was made with a key and none was given, or the other way round.
    """
    v = _Verifier(partial, key)
    ordered = order_files(paths)
    v.report.files = len(ordered)
    for path in ordered:
        v.files.append(str(path))
        v.file_start = True
        for n, line in _lines(path):
            v.feed(Position(str(path), n), line)
            v.file_start = False
    return v.finish()
