"""Provider keys: read from env vars or files, rotated per attempt, never printed.

A file source is re-read when it changes (the kubelet swaps a Secret volume's
``..data`` symlink on rotation), checked at most once per ``recheck`` seconds so
the hot path does not stat a file on every request.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from .config import KeySource, Provider
from .filewatch import FileWatch


class MissingKey(Exception):
    """A key source that yields no key. The message names the source, never a value."""


@dataclass(frozen=True, slots=True)
class Secret:
    value: str

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


class _FileKey:
    def __init__(self, path: str, recheck: float) -> None:
        self.path = path
        self._watch = FileWatch(path, every=recheck, seen=False)
        self._value: Secret | None = None

    def get(self) -> Secret:
        changed = self._watch.changed()
        if self._value is not None and not changed:
            return self._value
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError as e:
            self._watch.retry()
            if self._value is not None:
                # Mid-rotation the path can vanish for an instant: keep the last key.
                return self._value
            raise MissingKey(f"cannot read key file {self.path}: {e.strerror}") from None
        if not text:
            self._watch.retry()
            if self._value is not None:
                return self._value
            raise MissingKey(f"key file {self.path} is empty")
        self._value = Secret(text)
        return self._value


class KeyRing:
    """The keys of one provider, handed out round-robin."""

    def __init__(self, provider: Provider, *, recheck: float = 1.0) -> None:
        self.provider = provider.name
        self.sources = provider.keys
        self._sources: list[tuple[KeySource, _FileKey | None]] = [
            (s, _FileKey(s.file, recheck) if s.file else None) for s in provider.keys
        ]
        self._next = itertools.cycle(range(len(self._sources)))

    def _read(self, index: int) -> Secret:
        source, file_key = self._sources[index]
        if file_key is not None:
            return file_key.get()
        assert source.env is not None
        value = os.environ.get(source.env, "").strip()
        if not value:
            raise MissingKey(f"environment variable {source.env} is not set")
        return Secret(value)

    def next(self) -> Secret:
        errors = []
        for _ in range(len(self._sources)):
            try:
                return self._read(next(self._next))
            except MissingKey as e:
                errors.append(str(e))
        raise MissingKey(f"provider {self.provider!r} has no usable key: {'; '.join(errors)}")

    def values(self) -> list[str]:
        """Every key the ring can hand out now (to scrub responses); unreadable ones skipped."""
        found = []
        for i in range(len(self._sources)):
            try:
                found.append(self._read(i).value)
            except MissingKey:
                continue
        return found

    def check(self) -> list[str]:
        """Problems with each source, for ``sidegate config check`` and startup."""
        problems = []
        for i, (source, _) in enumerate(self._sources):
            try:
                self._read(i)
            except MissingKey as e:
                problems.append(f"providers.{self.provider}.keys[{i}] ({source.describe()}): {e}")
        return problems
