"""The SSE decoder: awkward chunk boundaries, bounded memory, linear time."""

from __future__ import annotations

import random
import time

import pytest

from extproc.sse import Event, EventTooLarge, SSEDecoder

STREAM = (
    b'event: message_start\r\ndata: {"a": 1}\r\n\r\n'
    b": ping\n\n"
    b"data: line one\ndata: line two\n\n"
    b"data: caf\xc3\xa9\r\r"
    b"data: [DONE]\n\n"
)


def _events(items: list[Event | bytes | EventTooLarge]) -> list[Event]:
    assert all(isinstance(i, Event) for i in items), items
    return [i for i in items if isinstance(i, Event)]


@pytest.mark.parametrize("split", [1, 2, 3, 7, 64, len(STREAM)])
def test_any_chunking_gives_the_same_events(split: int) -> None:
    dec = SSEDecoder()
    got: list[Event] = []
    for i in range(0, len(STREAM), split):  # a CR at the end of one chunk, its LF in the next
        got += _events(dec.feed(STREAM[i : i + split]))
    assert [(e.event, e.data) for e in got] == [
        ("message_start", '{"a": 1}'),
        (None, ""),
        (None, "line one\nline two"),
        (None, "café"),
        (None, "[DONE]"),
    ]
    assert got[0].raw == b'event: message_start\ndata: {"a": 1}\n\n'
    assert dec.pending == b""


def test_unterminated_event_is_pending() -> None:
    dec = SSEDecoder()
    assert _events(dec.feed(b"data: 1\n\ndata: trunc")) == [Event(None, "1", b"data: 1\n\n")]
    assert dec.pending == b"data: trunc"


def test_event_over_the_bound_is_reported_once_and_the_rest_dropped() -> None:
    dec = SSEDecoder(max_event_bytes=1000)
    items = dec.feed(b"data: small\n\ndata: " + b"x" * 600)
    assert _events(items[:1])[0].data == "small" and len(items) == 1
    items = dec.feed(b"x" * 600)
    assert items == [EventTooLarge(size=1206, limit=1000)]
    assert dec.feed(b"\n\ndata: later\n\n") == []
    assert dec.pending == b""  # nothing held after the failure


def test_stream_over_hands_on_a_large_event_as_it_arrives() -> None:
    dec = SSEDecoder(max_event_bytes=100, stream_over=10)
    big = b"data: " + b"y" * 50 + b"\n\n"
    out: list[Event | bytes | EventTooLarge] = []
    for i in range(0, len(big), 8):
        out += dec.feed(big[i : i + 8])
    out += dec.feed(b"data: after\n\n")
    raw = b"".join(i for i in out if isinstance(i, bytes))
    assert raw == big  # every byte of it, in order, none held past its arrival
    assert [i.data for i in out if isinstance(i, Event)] == ["after"]
    assert dec.pending == b""


def test_stream_over_finds_a_blank_line_split_across_chunks() -> None:
    dec = SSEDecoder(stream_over=4)
    out = dec.feed(b"data: 0123456789\n") + dec.feed(b"\ndata: next\n\n")
    assert b"".join(i for i in out if isinstance(i, bytes)) == b"data: 0123456789\n\n"
    assert [i.data for i in out if isinstance(i, Event)] == ["next"]


def _decode_time(size: int, count: int) -> float:
    """Seconds to decode ``count`` events of ``size`` bytes, fed in 16 KiB chunks."""
    stream = (b"data: " + b"z" * size + b"\n\n") * count
    dec = SSEDecoder(max_event_bytes=64 << 20)
    start = time.perf_counter()
    for i in range(0, len(stream), 16384):
        dec.feed(stream[i : i + 16384])
    return time.perf_counter() - start


def test_decoding_is_linear_in_the_event_size() -> None:
    # The same 4 MB as one event or as four: the old decoder rescanned its
    # whole buffer on every chunk, so one 4 MB event cost 4x four 1 MB ones.
    four = min(_decode_time(1 << 20, 4) for _ in range(5))
    one = min(_decode_time(4 << 20, 1) for _ in range(5))
    assert one < 2.5 * four + 0.02, f"4 x 1 MB: {four * 1000:.1f} ms, 1 x 4 MB: {one * 1000:.1f} ms"
    assert one < 0.5, f"a 4 MB event took {one * 1000:.0f} ms"


@pytest.mark.parametrize("seed", range(20))
def test_random_chunking_loses_and_reorders_nothing(seed: int) -> None:
    rng = random.Random(seed)
    events = [
        f"event: e{i}\ndata: {'v' * rng.choice([0, 1, 5, 40, 300])}\n\n".encode() for i in range(30)
    ]
    stream = b"".join(events).replace(b"\n", b"\r\n") if seed % 2 else b"".join(events)
    dec = SSEDecoder(max_event_bytes=1 << 20, stream_over=100 if seed % 3 == 0 else None)
    out: list[Event | bytes | EventTooLarge] = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 50)
        out += dec.feed(stream[pos : pos + step])
        pos += step
    got = b"".join(
        i.raw if isinstance(i, Event) else i for i in out if not isinstance(i, EventTooLarge)
    )
    assert got == b"".join(events) and dec.pending == b""
    names = [i.event for i in out if isinstance(i, Event)]
    if dec.stream_over is None:
        assert names == [f"e{i}" for i in range(30)]
