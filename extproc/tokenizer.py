"""tiktoken encodings, loaded without the network.

tiktoken fetches its BPE files from a public blob store on first use, with no
timeout: in a cluster without egress that is a hang, not an error. sidegate
finds the files itself, checks them against the official sha256, and hands
them to tiktoken through its own cache (``TIKTOKEN_CACHE_DIR``), so tiktoken
never reaches for the network. Sources, in order:

1. a configured directory (``tokenizer.dir`` or ``SIDEGATE_TOKENIZER_DIR``)
   holding ``o200k_base.tiktoken`` (or ``.tiktoken.gz``), or a tiktoken cache
   directory (files named by the sha1 of the download URL);
2. the ``bpe-openai`` package, which ships both encodings as ``.tiktoken.gz``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

# tiktoken itself (its extension, ~1.3 MiB of RSS) is imported only by a
# gateway that counts tokens: one without token quotas never loads it.

ENV_DIR = "SIDEGATE_TOKENIZER_DIR"

# The official files (tiktoken_ext.openai_public): download URL and sha256.
_BASE_URL = "https://openaipublic.blob.core.windows.net/encodings/"
OFFICIAL_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding] = {}


class TokenizerError(RuntimeError):
    pass


def _cache_name(encoding: str) -> str:
    # tiktoken names a cached file by the sha1 of the URL it came from.
    return hashlib.sha1(f"{_BASE_URL}{encoding}.tiktoken".encode()).hexdigest()


def _package_dir() -> Path | None:
    # find_spec locates the package without importing it (and its 70 MB extension).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _candidates(encoding: str, directory: str | None) -> Iterator[Path]:
    configured = directory or os.environ.get(ENV_DIR)
    if configured:
        d = Path(configured)
        yield d / f"{encoding}.tiktoken"
        yield d / f"{encoding}.tiktoken.gz"
        yield d / _cache_name(encoding)
    package = _package_dir()
    if package is not None:
        yield package / f"{encoding}.tiktoken.gz"


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def encoding_bytes(encoding: str, directory: str | None = None) -> bytes:
    """The verified BPE file of ``encoding``; a clear error when none is found."""
    expected = OFFICIAL_SHA256.get(encoding)
    if expected is None:
        raise TokenizerError(
            f"unknown encoding {encoding!r}; sidegate ships {', '.join(OFFICIAL_SHA256)}"
        )
    looked: list[str] = []
    for path in _candidates(encoding, directory):
        if not path.is_file():
            looked.append(f"{path} (missing)")
            continue
        try:
            data = _read(path)
        except (OSError, gzip.BadGzipFile, EOFError) as e:
            looked.append(f"{path} (unreadable: {e})")
            continue
        if hashlib.sha256(data).hexdigest() != expected:
            looked.append(f"{path} (sha256 is not the official {encoding})")
            continue
        return data
    where = "; ".join(looked) or "nowhere: no directory configured and bpe-openai not installed"
    raise TokenizerError(
        f"cannot load the {encoding} encoding without the network. Looked in: {where}. "
        f"Install the bpe-openai package, or put {encoding}.tiktoken in a directory "
        f"named by tokenizer.dir or ${ENV_DIR}."
    )


def load(encoding: str, directory: str | None = None) -> tiktoken.Encoding:
    """The tiktoken ``Encoding``, loaded once per process."""
    with _lock:
        found = _loaded.get(encoding)
        if found is not None:
            return found
        import tiktoken

        data = encoding_bytes(encoding, directory)
        with tempfile.TemporaryDirectory(prefix="sidegate-tiktoken-") as cache:
            (Path(cache) / _cache_name(encoding)).write_bytes(data)
            saved = os.environ.get("TIKTOKEN_CACHE_DIR")
            os.environ["TIKTOKEN_CACHE_DIR"] = cache
            try:
                # get_encoding would also cache by name; the constructor is what
                # reads the file, and it finds it verified in ``cache``.
                enc = tiktoken.get_encoding(encoding)
            finally:
                if saved is None:
                    del os.environ["TIKTOKEN_CACHE_DIR"]
                else:
                    os.environ["TIKTOKEN_CACHE_DIR"] = saved
        # tiktoken keeps the Python dict of ranks only to pickle the Encoding
        # (its Rust core holds its own copy); sidegate never pickles one, and
        # the dict is ~27 MiB of every sidecar's memory for o200k_base.
        if isinstance(getattr(enc, "_mergeable_ranks", None), dict):
            enc._mergeable_ranks = {}
        _loaded[encoding] = enc
        return enc


def encoding_for_model(model: str) -> str:
    """The encoding that counts ``model``'s tokens, or the nearest one.

    OpenAI models map exactly (tiktoken's table). Other providers' tokenizers
    are not public; o200k_base is within a few tens of percent of them, which
    is what an estimate reconciled with real usage needs.
    """
    import tiktoken

    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return "o200k_base"
    return name if name in OFFICIAL_SHA256 else "o200k_base"
