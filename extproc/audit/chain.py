"""The hash chain that makes an audit log tamper-evident.

Every record a sink writes carries ``seq`` (its position in that sink's chain,
from 0), ``prev`` (the hash of the record before it; 64 zeros for the first
record of a chain) and ``hash``::

    hash = sha256(prev ":" seq ":" canonical(record without hash, prev, seq))

or, with ``audit.chain_key``, HMAC-SHA256 of the same bytes under that key:
then nobody without the key can re-hash an edited chain so that it verifies.

where ``canonical`` is JSON with sorted keys, no spaces and ASCII only (so the
bytes do not depend on the writer's encoder). Editing a record breaks its own
hash; re-hashing it breaks the ``prev`` of the next one; deleting, inserting or
reordering records breaks ``prev`` and ``seq``. ``verify`` says which.

A chain also records what happens to it, as records of its own ``kind``:

- ``start``: a process began writing (after a restart the file chain goes on
  from the last record on disk; stdout and OTLP chains begin again at 0).
- ``pruned``: rotation removed the oldest file; names the last record it held,
  so a log that begins mid-chain is explained, and one whose first file was
  deleted by hand is not.
- ``recovered``: a torn last line (a crash mid-write) was cut off on restart.
- ``lost``: records that could not be written (a full disk, an unwritable
  file) while ``audit.on_failure`` let requests go on; how many and why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
VERSION = 1
# The fields the chain adds to a record; everything else is the record's content.
CHAIN_FIELDS = ("hash", "prev", "seq")


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def digest(prev: str, seq: int, body: bytes, key: bytes | None = None) -> str:
    head = f"{prev}:{seq}:".encode("ascii")
    h = hashlib.sha256(head) if key is None else hmac.new(key, head, hashlib.sha256)
    h.update(body)
    return h.hexdigest()


def mac_name(key: bytes | None) -> str:
    """How a chain's hashes are made, as its ``start`` records say."""
    return "sha256" if key is None else "hmac-sha256"


@dataclass(frozen=True, slots=True)
class Link:
    """A chain's last record: what the next one follows."""

    seq: int
    hash: str


class Chain:
    """Seals record bodies into lines, one after the other."""

    def __init__(self, head: Link | None = None, key: bytes | None = None) -> None:
        self.head = head
        self.key = key

    @property
    def next_seq(self) -> int:
        return 0 if self.head is None else self.head.seq + 1

    def seal(self, body: bytes) -> bytes:
        """The line for ``body`` (a canonical record without chain fields), chained on."""
        prev = GENESIS if self.head is None else self.head.hash
        seq = self.next_seq
        h = digest(prev, seq, body, self.key)
        self.head = Link(seq, h)
        # The chain fields go last: ``body`` is canonical, the line need not be.
        return body[:-1] + f',"hash":"{h}","prev":"{prev}","seq":{seq}}}\n'.encode("ascii")


class Edited(ValueError):
    """A sealed record whose content no longer matches its hash."""

    def __init__(self, record: dict[str, Any], link: Link, prev: str) -> None:
        super().__init__("its content does not match its hash: the record was edited")
        self.record, self.link, self.prev = record, link, prev


def check_line(line: bytes, key: bytes | None = None) -> tuple[dict[str, Any], Link, str]:
    """A line's record, its own link and the hash it says it follows.

    Raises ``ValueError`` naming what is wrong when the line is not a sealed
    record, ``Edited`` when its content does not match its hash.
    """
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not a JSON record") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    h, prev, seq = record.get("hash"), record.get("prev"), record.get("seq")
    if not (isinstance(h, str) and isinstance(prev, str)) or type(seq) is not int or seq < 0:
        raise ValueError("no chain fields (hash, prev, seq)")
    body = {k: v for k, v in record.items() if k not in CHAIN_FIELDS}
    try:
        expected = digest(prev, seq, canonical(body), key)
    except ValueError:
        raise ValueError("not a JSON record") from None
    if expected != h:
        raise Edited(record, Link(seq, h), prev)
    return record, Link(seq, h), prev
