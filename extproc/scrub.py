"""Provider credentials scrubbed from every response byte that returns to the app.

A provider can hand sidegate's key back: OpenAI's 401 names a masked form of
it (``sk-proj-****…wxyz``, older ``sk-abc1***…wxyz``), an echoing or broken
provider returns it whole. Both forms are overwritten with ``*`` of the same
length, so a JSON string stays valid and a passed-through ``content-length``
stays right. Streams are scrubbed chunk by chunk: the bytes a key could still
be starting with are held back until the next chunk shows whether it is one.

Provider-account headers are removed by name (``ACCOUNT_HEADERS``); request
ids and rate-limit headers stay, apps need them to report and back off.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Headers that identify the provider account sidegate uses, or set state in
# the app for it; none is meant for the app.
ACCOUNT_HEADERS = (
    "set-cookie",  # a provider session (e.g. Cloudflare's __cf_bm) for sidegate's account
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
)

# Bytes a key, or a masked one, is made of; a held-back tail is a trailing run of them.
_KEY_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.*\xe2\x80\xa6"
# A masked key: a run of mask characters (``*``, ``...``, ``…``) then the last
# four characters of a key. The visible prefix before it (``sk-proj-``) is
# looked for by hand, in a bounded window, so a long base64 run cannot make
# the regex backtrack.
_MASK = rb"(?:\*{3,}|\.{3}|\xe2\x80\xa6)"
_MARKS = (b"***", b"...", b"\xe2\x80\xa6")
_PREFIX = re.compile(rb"[A-Za-z0-9_\-]{1,24}\Z")
_MIN_KEY = 12  # shorter values are not secrets worth a regex (and would match too much)


class Scrubber:
    """Overwrites any of ``keys``, whole or masked, in a stream of chunks."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = sorted({k.encode() for k in keys if len(k) >= _MIN_KEY}, key=len, reverse=True)
        tails = sorted({k[-4:] for k in self.keys})
        self._masked = (
            re.compile(_MASK + b"(?:" + b"|".join(re.escape(t) for t in tails) + b")")
            if tails
            else None
        )
        # Enough to cover a whole key, or a masked one with a long run of stars.
        self._hold = max((2 * len(k) + 32 for k in self.keys), default=0)
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self.keys:
            return chunk
        data = self.scrub(self._tail + chunk if self._tail else chunk)
        # Hold back what could be the beginning of a key that the next chunk ends.
        cut = max(len(data.rstrip(_KEY_BYTES)), len(data) - self._hold)
        self._tail = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return self.scrub(tail) if tail else b""

    def scrub(self, data: bytes) -> bytes:
        """``data`` with every key, whole or masked, overwritten (no state kept)."""
        for key in self.keys:
            if key in data:
                data = data.replace(key, b"*" * len(key))
        if self._masked is None or not any(m in data for m in _MARKS):
            return data  # the common case, at memchr speed; the regex scans per byte
        if self._masked.search(data) is None:
            return data
        out = bytearray(data)
        for m in self._masked.finditer(data):
            start = m.start()
            prefix = _PREFIX.search(data, max(start - 24, 0), start)
            if prefix is not None:
                start = prefix.start()
            out[start : m.end()] = b"*" * (m.end() - start)
        return bytes(out)
