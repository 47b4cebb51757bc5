"""The audit log as JSON lines in a file, rotated by size, its chain going on across files.

The active file is ``path``; a full one is renamed ``path.<seq>``, where
``<seq>`` is the position in the chain of its first record, zero-padded so
that names sort in chain order. Past ``max_files`` rotated files the oldest is
removed, and a ``pruned`` record names the last record it held.

On start the chain goes on from the last record on disk (the active file, or
the newest rotated one when the active file is empty), so restarts and
rotation leave one chain that ``sidegate audit verify`` checks end to end. A
torn last line (a crash in the middle of a write) is cut off and a
``recovered`` record says how many bytes went. An exclusive ``flock`` keeps
a second process from writing the same chain.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..config import ConfigError
from . import config
from .chain import Link, canonical, check_line
from .sink import Sink, SinkFailed, marker

log = logging.getLogger(__name__)

# How much of a file's end is read to find its last record: the largest record
# (two contents of content.max_bytes, JSON-escaped) fits well within it.
TAIL_BYTES = 8 * 1024 * 1024
SEQ_DIGITS = 12


def rotated_name(path: Path, first_seq: int) -> Path:
    return path.with_name(f"{path.name}.{first_seq:0{SEQ_DIGITS}d}")


def rotated_files(path: Path) -> list[tuple[int, Path]]:
    """The rotated files of ``path``, oldest first, with the seq each begins at."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d{" + str(SEQ_DIGITS) + r"})")
    found = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    for name in names:
        m = pattern.fullmatch(name)
        if m:
            found.append((int(m.group(1)), path.parent / name))
    return sorted(found)


def _why(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)


def read_tail(fd: int) -> tuple[bytes | None, int]:
    """The last complete line of the file open at ``fd`` and the size of a torn tail after it."""
    size = os.fstat(fd).st_size
    start = max(0, size - TAIL_BYTES)
    data = os.pread(fd, size - start, start)
    end = data.rfind(b"\n")
    torn = len(data) - end - 1
    if end < 0:
        return None, torn
    begin = data.rfind(b"\n", 0, end) + 1
    if begin == 0 and start > 0:
        return None, torn  # a last line longer than TAIL_BYTES: not one of ours
    return data[begin:end], torn


def _link_of(line: bytes | None) -> Link | None:
    if line is None:
        return None
    try:
        _, link, _ = check_line(line)
    except ValueError:
        return None
    return link


def _first_seq(path: Path) -> int | None:
    with path.open("rb") as f:
        link = _link_of(f.readline(TAIL_BYTES).rstrip(b"\n") or None)
    return link.seq if link is not None else None


class FileSink(Sink):
    durable = True

    def __init__(self, cfg: config.FileSink) -> None:
        super().__init__()
        self.cfg = cfg
        self.path = Path(cfg.path)
        self.name = f"file {cfg.path}"
        self._fd = -1
        self._size = 0
        self._first_seq = 0
        self._identity: tuple[int, int] | None = None
        self._dirty = False  # written since the last fsync

    # -- opening and recovery -------------------------------------------------

    def open(self) -> list[dict[str, object]]:
        try:
            return self._open()
        except OSError as e:
            raise SinkFailed(f"cannot open {self.path}: {_why(e)}") from None

    def _open(self) -> list[dict[str, object]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                "audit.file.path", f"{self.path} is being written by another process"
            ) from None
        markers: list[dict[str, object]] = []
        reader = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            last, torn = read_tail(reader)
            if torn:
                # A crash mid-write: the record was never complete, so no
                # client was told its response ended (the durable mode).
                size = os.fstat(reader).st_size
                lost = os.pread(reader, torn, size - torn)
                os.ftruncate(fd, size - torn)
                markers.append(
                    marker(
                        "recovered",
                        torn_bytes=torn,
                        torn_sha256=hashlib.sha256(lost).hexdigest(),
                    )
                )
            head = _link_of(last)
            if last is not None and head is None:
                log.error(
                    "audit: the last record of %s does not verify; the chain goes on from "
                    "scratch (run `sidegate audit verify`)",
                    self.path,
                )
            first = _first_seq(self.path)
        finally:
            os.close(reader)
        if last is None and os.fstat(fd).st_size == 0:
            head = self._head_of_rotated()
        self.chain.head = head
        self._fd = fd
        st = os.fstat(fd)
        self._size = st.st_size
        self._identity = (st.st_dev, st.st_ino)
        self._first_seq = first if first is not None else self.chain.next_seq
        self._sync_dir()
        return markers

    def _head_of_rotated(self) -> Link | None:
        rotated = rotated_files(self.path)
        if not rotated:
            return None
        fd = os.open(rotated[-1][1], os.O_RDONLY | os.O_CLOEXEC)
        try:
            last, _ = read_tail(fd)
        finally:
            os.close(fd)
        return _link_of(last)

    def _sync_dir(self) -> None:
        # A new or renamed file exists after a power loss only once its directory is synced.
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _still_ours(self) -> bool:
        """Whether ``path`` is still the file we write (not deleted, moved or replaced)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def _reopen(self, first_seq: int | None = None) -> None:
        self._close_fd()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(errno.EBUSY, "being written by another process") from None
        st = os.fstat(fd)
        self._fd, self._size = fd, st.st_size
        self._identity = (st.st_dev, st.st_ino)
        self._first_seq = self.chain.next_seq if first_seq is None else first_seq

    # -- writing --------------------------------------------------------------

    def write(self, bodies: Sequence[bytes], sync: bool) -> None:
        try:
            if self._fd < 0 or not self._still_ours():
                # Deleted, moved or replaced under us (or failed before): the
                # chain goes on in whatever is at the path now, so a deletion
                # shows as a hole to `audit verify`.
                self._reopen()
            self._write(bodies)
            if sync:
                self.flush_or_raise()
        except OSError as e:
            raise SinkFailed(f"cannot write {self.path}: {_why(e)}") from None

    def _write(self, bodies: Sequence[bytes]) -> None:
        buf = bytearray()
        buf_head = self.chain.head  # the head before the records in buf
        for body in bodies:
            before = self.chain.head
            line = self.chain.seal(body)
            pending = self._size + len(buf)
            if pending and pending + len(line) > self.cfg.max_bytes:
                self._append(buf, buf_head)
                buf.clear()
                try:
                    # The record opens the new file: its line does not depend on the file.
                    pruned = self._rotate(first_seq=self.chain.next_seq - 1)
                except OSError:
                    self.rollback(before)
                    raise
                buf_head = before
                buf += line
                for marker in pruned:
                    buf += self.chain.seal(marker)
            else:
                buf += line
        self._append(buf, buf_head)

    def _append(self, buf: bytearray, head: Link | None) -> None:
        if not buf:
            return
        size = self._size
        try:
            view = memoryview(buf)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError:
            # No half record left behind: the next write, or a restart, would
            # chain on from a line that does not parse.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            self.rollback(head)
            raise
        self._size = size + len(buf)
        self._dirty = True

    def _rotate(self, first_seq: int) -> list[bytes]:
        self.flush_or_raise()
        self._close_fd()
        os.rename(self.path, rotated_name(self.path, self._first_seq))
        self._reopen(first_seq)
        self._sync_dir()
        markers: list[bytes] = []
        rotated = rotated_files(self.path)
        for _, old in rotated[: max(0, len(rotated) - self.cfg.max_files)]:
            fd = os.open(old, os.O_RDONLY | os.O_CLOEXEC)
            try:
                last, _ = read_tail(fd)
            finally:
                os.close(fd)
            link = _link_of(last)
            os.unlink(old)
            note = marker("pruned", file=old.name)
            if link is not None:
                note.update(last_seq=link.seq, last_hash=link.hash)
            markers.append(canonical(note))
        return markers

    def flush_or_raise(self) -> None:
        if self._dirty and self._fd >= 0:
            os.fsync(self._fd)
            self._dirty = False

    def _close_fd(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            finally:
                self._fd = -1

    def close(self) -> None:
        try:
            self.flush_or_raise()
        except OSError as e:
            log.error("audit: %s: %s at close", self.name, _why(e))
        self._close_fd()
