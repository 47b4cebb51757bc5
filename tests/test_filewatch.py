"""Reloading files: Secret rotation by a ``..data`` swap, half-done swaps, missing files."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.config import KeySource, Provider, ProviderApi
from extproc.filewatch import FileWatch
from extproc.keys import KeyRing, MissingKey
from tests.podsim import kubelet_volume


def _ring(path: Path) -> KeyRing:
    provider = Provider(
        name="p", api=ProviderApi.OPENAI, base_url="http://h/v1", scheme="http", host="h",
        port=80, base_path="/v1", keys=(KeySource(file=str(path)),),
    )  # fmt: skip
    return KeyRing(provider, recheck=0.0)


def test_filewatch_reports_each_change_once(tmp_path: Path) -> None:
    kubelet_volume(tmp_path, {"k": "one"}, 1)
    watch = FileWatch(tmp_path / "k")
    assert not watch.changed()
    kubelet_volume(tmp_path, {"k": "two"}, 2)
    assert watch.changed()
    assert not watch.changed()
    (tmp_path / "..data").unlink()  # mid-swap: gone for an instant
    assert not watch.changed()
    watch.retry()
    kubelet_volume(tmp_path, {"k": "three"}, 3)
    assert watch.changed()


def test_filewatch_throttles(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a")
    watch = FileWatch(tmp_path / "f", every=3600, seen=False)
    assert watch.changed()
    (tmp_path / "f").write_text("bb")
    assert not watch.changed(), "looked again within the interval"


def test_key_file_rotation_and_gaps(tmp_path: Path) -> None:
    ring = _ring(tmp_path / "openai")
    with pytest.raises(MissingKey, match="cannot read key file"):
        ring.next()
    kubelet_volume(tmp_path, {"openai": "sk-one\n"}, 1)
    assert ring.next().value == "sk-one"
    kubelet_volume(tmp_path, {"openai": "sk-two\n"}, 2)
    assert ring.next().value == "sk-two"
    (tmp_path / "..data").unlink()
    assert ring.next().value == "sk-two", "a vanished file keeps the last key"
    kubelet_volume(tmp_path, {"openai": "\n"}, 3)
    assert ring.next().value == "sk-two", "a half-written (empty) file keeps the last key"
    kubelet_volume(tmp_path, {"openai": "sk-four\n"}, 4)
    assert ring.next().value == "sk-four"
    assert "sk-" not in repr(ring.next())


def test_empty_key_file_without_a_previous_key(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("  \n")
    with pytest.raises(MissingKey, match="is empty"):
        _ring(tmp_path / "k").next()
