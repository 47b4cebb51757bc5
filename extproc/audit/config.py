"""Config of the audit log: where records go, how durably, and what a failing sink does.

Parsed from the ``audit:`` section of the gateway config. Absent, or with no
sink, there is no audit log and the pipeline's audit listener costs nothing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ..config import KeySource, Reader


class Durability(enum.StrEnum):
    # Each record is written and fsynced (stdout flushed) before the client
    # sees the end of its response; concurrent requests share one fsync.
    SYNC = "sync"
    # Records are written and fsynced every flush_interval; responses never wait.
    BATCH = "batch"


class OnFailure(enum.StrEnum):
    # New requests get a 503 naming the sink until it can be written again.
    REFUSE = "refuse"
    # Requests go on; the records that could not be written are counted as lost.
    SERVE = "serve"


class OtlpProtocol(enum.StrEnum):
    GRPC = "grpc"
    HTTP = "http/protobuf"


FILE_MAX_BYTES = 100 * 1024 * 1024
FILE_MAX_FILES = 10
OTLP_MAX_QUEUE = 2048
CONTENT_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class FileSink:
    path: str
    # The active file is rotated once the next record would take it past this.
    max_bytes: int = FILE_MAX_BYTES
    # Rotated files kept beside the active one; the oldest beyond are removed
    # (and the removal is itself recorded in the chain, see ``chain``).
    max_files: int = FILE_MAX_FILES


@dataclass(frozen=True, slots=True)
class OtlpSink:
    # None: the SDK's OTEL_EXPORTER_OTLP_LOGS_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT.
    endpoint: str | None = None
    protocol: OtlpProtocol = OtlpProtocol.GRPC
    # Records the exporter holds for a collector that is slow or away; more are dropped.
    max_queue: int = OTLP_MAX_QUEUE


@dataclass(frozen=True, slots=True)
class ContentConfig:
    # Routes (the names clients ask for) whose prompts and responses are recorded; "*": all.
    routes: frozenset[str] = frozenset()
    # Of each prompt and each response, the most that is kept; beyond, cut and marked.
    max_bytes: int = CONTENT_MAX_BYTES


@dataclass(frozen=True, slots=True)
class AuditConfig:
    file: FileSink | None = None
    stdout: bool = False
    otlp: OtlpSink | None = None
    durability: Durability = Durability.SYNC
    flush_interval: float = 0.2
    # Records waiting for the writer; past it the sink counts as failing.
    queue_size: int = 10_000
    on_failure: OnFailure = OnFailure.REFUSE
    content: ContentConfig = field(default_factory=ContentConfig)
    # A secret the chain's hashes are keyed with (HMAC-SHA256): without it an
    # edited log cannot be re-hashed to verify. None: plain SHA-256.
    chain_key: KeySource | None = None

    @property
    def enabled(self) -> bool:
        return self.file is not None or self.stdout or self.otlp is not None

    def records_content(self, route: str) -> bool:
        routes = self.content.routes
        return bool(routes) and (route in routes or "*" in routes)


_FIELDS = [
    "file",
    "stdout",
    "otlp",
    "durability",
    "flush_interval",
    "queue_size",
    "on_failure",
    "content",
    "chain_key",
]


_E = TypeVar("_E", bound=enum.StrEnum)


def _choice(r: Reader, kind: type[_E], default: _E) -> _E:
    try:
        return kind(r.string(default.value))
    except ValueError:
        raise r.fail("expected one of: " + ", ".join(e.value for e in kind)) from None


def _chain_key(r: Reader) -> KeySource | None:
    """{env: NAME} or {file: PATH}, as a provider key.

    Read here rather than by the provider keys' parser: the example config,
    which shows every field a parser reads, can show only one of two
    exclusive forms (its comment names both).
    """
    from ..config import KeySource

    if r.value is None:
        return None
    if not isinstance(r.value, dict) or len(r.value) != 1 or set(r.value) - {"env", "file"}:
        raise r.fail("expected {env: NAME} or {file: PATH}")
    if "file" in r.value:
        return KeySource(file=r.child("file").string())
    name = r.child("env").string()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise r.child("env").fail(f"not an environment variable name: {name!r}")
    return KeySource(env=name)


def parse_audit_config(root: Reader, routes: Mapping[str, object]) -> AuditConfig:
    r = root.child("audit")
    r.mapping(_FIELDS, optional=True)
    d = AuditConfig()

    file_sink = None
    f_r = r.child("file")
    if f_r.value is not None:
        f_r.mapping(["path", "max_bytes", "max_files"])
        file_sink = FileSink(
            path=f_r.child("path").string(),
            # A record larger than this gets a file of its own.
            max_bytes=f_r.child("max_bytes").integer(FILE_MAX_BYTES, minimum=4096),
            max_files=f_r.child("max_files").integer(FILE_MAX_FILES, minimum=1, maximum=10_000),
        )

    otlp = None
    o_r = r.child("otlp")
    if o_r.value is not None and o_r.value is not False:
        if o_r.value is True:
            otlp = OtlpSink()
        else:
            o_r.mapping(["endpoint", "protocol", "max_queue"])
            otlp = OtlpSink(
                endpoint=o_r.child("endpoint").opt_string(),
                protocol=_choice(o_r.child("protocol"), OtlpProtocol, OtlpProtocol.GRPC),
                max_queue=o_r.child("max_queue").integer(OTLP_MAX_QUEUE, minimum=1),
            )

    c_r = r.child("content")
    c_r.mapping(["routes", "max_bytes"], optional=True)
    opted: set[str] = set()
    for item in c_r.child("routes").elements():
        name = item.string()
        if name != "*" and name not in routes:
            raise item.fail(f"no route or model named {name!r}")
        opted.add(name)
    content = ContentConfig(
        routes=frozenset(opted),
        max_bytes=c_r.child("max_bytes").integer(CONTENT_MAX_BYTES, minimum=1),
    )

    config = AuditConfig(
        file=file_sink,
        stdout=r.child("stdout").boolean(False),
        otlp=otlp,
        durability=_choice(r.child("durability"), Durability, d.durability),
        flush_interval=r.child("flush_interval").duration(d.flush_interval),
        queue_size=r.child("queue_size").integer(d.queue_size, minimum=1),
        on_failure=_choice(r.child("on_failure"), OnFailure, d.on_failure),
        content=content,
        chain_key=_chain_key(r.child("chain_key")),
    )
    if r.value is not None and not config.enabled:
        raise r.fail("an audit section needs at least one sink: file, stdout or otlp")
    return config
