"""Small helpers over Envoy's HeaderMap and HeaderMutation messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb


def to_dict(header_map: base_pb2.HeaderMap) -> dict[str, str]:
    # Envoy lower-cases names and sends values as raw bytes.
    return {
        h.key: (h.raw_value.decode("latin-1") if h.raw_value else h.value)
        for h in header_map.headers
    }


def mutation(
    set_: Mapping[str, str] | None = None, remove: Iterable[str] = ()
) -> pb.HeaderMutation:
    m = pb.HeaderMutation()
    for key, value in (set_ or {}).items():
        opt = m.set_headers.add()
        opt.header.key = key
        opt.header.raw_value = value.encode("latin-1")
        opt.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    m.remove_headers.extend(remove)
    return m
