"""The audit log as JSON lines on the process's standard output (a container log).

Each batch is one ``write`` to file descriptor 1, so records reach the pipe
(or file) as soon as they are written; there is no buffer to lose in a crash.
Its chain cannot be read back, so it begins again, at ``seq`` 0, with every
process (a ``start`` record).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from .sink import Sink, SinkFailed

STDOUT = 1


class StdoutSink(Sink):
    durable = True

    def __init__(self, fd: int = STDOUT) -> None:
        super().__init__()
        self.fd = fd
        self.name = "stdout"
        self._regular = False

    def open(self) -> list[dict[str, object]]:
        try:
            self._regular = stat.S_ISREG(os.fstat(self.fd).st_mode)
        except OSError as e:
            raise SinkFailed(f"cannot write stdout: {e.strerror}") from None
        return []

    def write(self, bodies: Sequence[bytes], sync: bool) -> None:
        head = self.chain.head
        data = memoryview(b"".join(self.chain.seal(body) for body in bodies))
        try:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
            if sync and self._regular:
                os.fsync(self.fd)
        except OSError as e:
            # A pipe has no way back: what went out stays out, and the chain
            # goes on from the last line that went whole.
            if len(data) == 0:
                raise SinkFailed(f"cannot sync stdout: {e.strerror}") from None
            self.rollback(head)
            reason = e.strerror or errno.errorcode.get(e.errno or 0, "error")
            raise SinkFailed(f"cannot write stdout: {reason}") from None

    def close(self) -> None:
        pass  # every batch went out whole; descriptor 1 is not ours to close
