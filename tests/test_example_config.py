"""``examples/sidegate.yaml`` documents every field the config accepts, and stays valid.

The accepted fields are not listed here: they are recorded from the parser
itself (every ``Reader.mapping`` call names the fields allowed at its path)
while it parses the example with its optional fields (``# field: value``
lines) switched on. A field added to the parser but not to the example fails
this test, naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc import config as config_module
from extproc.config import Reader, load_config, parse_config, parse_config_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "sidegate.yaml"
# `# field: value` or `# - field: value`, as opposed to prose comments.
_OPTIONAL_LINE = re.compile(r"^(\s*)# (\s*(?:- )?[a-z_]+:(?:\s|$).*)$")


def with_optional_fields(text: str) -> str:
    """The example with every commented-out field switched on."""
    return "\n".join(_OPTIONAL_LINE.sub(r"\1\2", line) for line in text.splitlines()) + "\n"


def _normalise(path: str, name_maps: set[str]) -> str:
    """``providers.openai.keys[0]`` → ``providers.*.keys[*]`` (names and indices are data)."""
    out = re.sub(r"\[\d+\]", "[*]", path)
    for prefix in sorted(name_maps, key=len, reverse=True):
        if out.startswith(prefix + ".") and prefix:
            rest = out[len(prefix) + 1 :]
            name, _, tail = rest.partition(".")
            name = name.split("[")[0]
            suffix = rest[len(name) :]
            out = f"{prefix}.*{suffix}" if tail or suffix else f"{prefix}.*"
            break
    return out


def accepted_fields(doc: Any) -> tuple[dict[str, set[str]], set[str]]:
    """Fields the parser allows at each (normalised) path it visits, and its maps of names."""
    seen: list[tuple[str, Sequence[str] | None]] = []
    original = Reader.mapping

    def recording(
        self: Reader, allowed: Sequence[str] | None = None, *, optional: bool = False
    ) -> dict[str, Any]:
        seen.append((self.path, allowed))
        return original(self, allowed, optional=optional)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config_module.Reader, "mapping", recording)
        parse_config(doc)
    name_maps = {re.sub(r"\[\d+\]", "[*]", p) for p, allowed in seen if allowed is None}
    fields: dict[str, set[str]] = {}
    for path, allowed in seen:
        if allowed is not None:
            fields.setdefault(_normalise(path, name_maps), set()).update(allowed)
    return fields, name_maps


def _mappings(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        yield path, value
        for k, v in value.items():
            yield from _mappings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _mappings(v, f"{path}[{i}]")


def present_fields(doc: Any, name_maps: set[str]) -> dict[str, set[str]]:
    present: dict[str, set[str]] = {}
    for path, mapping in _mappings(doc):
        present.setdefault(_normalise(path, name_maps), set()).update(mapping)
    return present


def test_the_example_documents_every_field_the_config_accepts() -> None:
    doc = yaml.safe_load(with_optional_fields(EXAMPLE.read_text()))
    fields, name_maps = accepted_fields(doc)
    present = present_fields(doc, name_maps)
    missing = sorted(
        f"{path}.{name}" if path else name
        for path, allowed in fields.items()
        for name in allowed - present.get(path, set())
    )
    assert not missing, f"fields the config accepts but {EXAMPLE.name} does not show: {missing}"
    # The recording saw the whole tree, not just the top: a broken recorder fails here.
    for path in ("", "providers.*", "providers.*.keys[*]", "models.*.price", "routes.*",
                 "quotas[*]", "state.redis", "extproc", "tokenizer"):  # fmt: skip
        assert path in fields, f"the parser never read a mapping at {path!r}: {sorted(fields)}"


def test_a_field_missing_from_the_example_is_named() -> None:
    doc = yaml.safe_load(with_optional_fields(EXAMPLE.read_text()))
    del doc["providers"]["openai"]["ca_file"]
    del doc["timeouts"]["retry_after_max"]
    fields, name_maps = accepted_fields(doc)
    present = present_fields(doc, name_maps)
    assert "retry_after_max" not in present["timeouts"]
    assert "retry_after_max" in fields["timeouts"]
    # ca_file is still shown by no provider: the check is per field across all providers.
    assert "ca_file" in fields["providers.*"] - present["providers.*"]


def test_the_optional_fields_are_comments_a_user_can_switch_on() -> None:
    text = EXAMPLE.read_text()
    switched = with_optional_fields(text)
    assert switched != text
    for field in ("ca_file:", "socket:", "redis:", "dir:", "workload:"):
        assert re.search(rf"^\s*#\s+(- )?{field}", text, re.M), f"{field} is not shown commented"
    # Both forms are valid configs: as shipped, and with every option on.
    parse_config_text(switched, "example with optional fields")
    config = load_config(EXAMPLE)
    assert config.extproc_socket is None and config.quota.state.redis is None


def test_flat_and_nested_routes_mean_what_the_example_says() -> None:
    config = load_config(EXAMPLE)
    fast = config.routes["fast"]  # flat: a group per model, failover in order
    assert [[c.model for c in g] for g in fast.groups] == [["gpt-4o-mini"], ["claude-haiku"]]
    balanced = config.routes["balanced"]  # nested: one group splits an attempt by weight
    assert [[(c.model, c.weight) for c in g] for g in balanced.groups] == [
        [("gpt-4o-mini", 1), ("claude-haiku", 3)],
        [("gpt-4o", 1)],
    ]
