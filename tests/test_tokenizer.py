"""tiktoken encodings from local, verified files: never the network, never a hang."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from extproc import tokenizer


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any attempt to download an encoding fails the test at once.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tokenizer tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv(tokenizer.ENV_DIR, raising=False)


def test_the_packaged_files_are_the_official_ones() -> None:
    for name, digest in tokenizer.OFFICIAL_SHA256.items():
        assert hashlib.sha256(tokenizer.encoding_bytes(name)).hexdigest() == digest
    # Whatever the process had (litellm, imported by a client test, sets its own)
    # is what it has after: sidegate's private cache never leaks into it.
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    enc = tokenizer.load("o200k_base")
    assert enc.encode_ordinary("hello world") == [24912, 2375]
    assert os.environ.get("TIKTOKEN_CACHE_DIR") == before


def test_a_configured_directory_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tokenizer.encoding_bytes("cl100k_base")
    (tmp_path / "cl100k_base.tiktoken").write_bytes(data)
    monkeypatch.setattr(tokenizer, "_package_dir", lambda: None)
    assert tokenizer.encoding_bytes("cl100k_base", str(tmp_path)) == data
    # Gzipped, or under tiktoken's own cache name, through the environment.
    (tmp_path / "cl100k_base.tiktoken").unlink()
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(gzip.compress(data))
    monkeypatch.setenv(tokenizer.ENV_DIR, str(tmp_path))
    assert tokenizer.encoding_bytes("cl100k_base") == data
    (tmp_path / "cl100k_base.tiktoken.gz").unlink()
    (tmp_path / tokenizer._cache_name("cl100k_base")).write_bytes(data)
    assert tokenizer.encoding_bytes("cl100k_base") == data


def test_a_tampered_file_is_refused_with_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "o200k_base.tiktoken").write_bytes(b"aGVsbG8= 0\n")
    (tmp_path / "o200k_base.tiktoken.gz").write_bytes(b"not gzip")
    monkeypatch.setattr(tokenizer, "_package_dir", lambda: None)
    with pytest.raises(tokenizer.TokenizerError) as e:
        tokenizer.encoding_bytes("o200k_base", str(tmp_path))
    message = str(e.value)
    assert "cannot load the o200k_base encoding without the network" in message
    assert "sha256 is not the official o200k_base" in message
    assert "o200k_base.tiktoken.gz (unreadable" in message
    assert "Install the bpe-openai package" in message


def test_nothing_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizer, "_package_dir", lambda: None)
    with pytest.raises(tokenizer.TokenizerError, match="no directory configured"):
        tokenizer.encoding_bytes("o200k_base")
    with pytest.raises(tokenizer.TokenizerError, match="unknown encoding 'p50k_base'"):
        tokenizer.encoding_bytes("p50k_base")


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4.1-mini", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
        ("gemini-2.5-pro", "o200k_base"),
        ("text-davinci-003", "o200k_base"),  # p50k_base is not shipped: the default
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert tokenizer.encoding_for_model(model) == encoding
