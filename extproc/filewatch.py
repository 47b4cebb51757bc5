"""Has a file changed? The one check behind every reload here (keys, config, certificates).

Secret and ConfigMap volumes change by an atomic swap of their ``..data``
symlink, which ``stat`` through the symlinks sees as a new inode; inode, mtime
and size together also catch files rewritten in place.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

Stamp = tuple[tuple[int, int, int], ...]


def file_stamp(*paths: str | Path) -> Stamp | None:
    """The files' identity now, or None when one of them cannot be stat'ed."""
    try:
        stats = [os.stat(p) for p in paths]
    except OSError:
        return None
    return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)


class FileWatch:
    """Reports each change of a set of files once, looking at most every ``every`` seconds.

    With ``seen`` (the default) the files as they are now count as already
    seen; otherwise the first look reports a change. A missing file is not a
    change: the caller keeps what it had until the file is back.
    """

    def __init__(self, *paths: str | Path, every: float = 0.0, seen: bool = True) -> None:
        self.paths = paths
        self.every = every
        self._looked = -math.inf
        self._stamp = file_stamp(*paths) if seen else None

    def changed(self) -> bool:
        now = time.monotonic()
        if now - self._looked < self.every:
            return False
        self._looked = now
        stamp = file_stamp(*self.paths)
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        return True

    def retry(self) -> None:
        """The change could not be used (a half-done swap): report it again next time."""
        self._stamp = None
