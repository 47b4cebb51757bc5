"""The model names clients send, mapped onto routes (config ``model_names``).

Clients ask for real model ids (Claude Code for ``claude-opus-4-8``, an app for
``gpt-5-mini``), not sidegate's route names. A name is resolved, first match
wins:

1. a route of that name (every model is a route of its own name);
2. an alias: an exact name → a route;
3. a pattern (``*`` matches any run of characters): the most specific one,
   the one with the most characters besides ``*``; between two as specific,
   the one listed first;
4. the default route.

Patterns and the default skip a route that cannot serve the client's API (a
chat route for an embeddings request) and go on to the next candidate, so
``claude-*`` and an embeddings default can live side by side. A route name or
an alias is taken as the client's explicit choice and never skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Reader, Route

# The characters of model names (config._MODEL_NAME), and * in patterns.
_PATTERN = re.compile(r"^[A-Za-z0-9._:/@+*-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Pattern:
    pattern: str
    route: str
    regex: re.Pattern[str]

    @property
    def specificity(self) -> int:
        return len(self.pattern) - self.pattern.count("*")


@dataclass(frozen=True, slots=True)
class ModelNames:
    aliases: Mapping[str, str]  # exact name → route
    patterns: tuple[Pattern, ...]  # most specific first
    default: str | None = None

    def resolve(
        self, name: str, routes: Mapping[str, object], serves: Callable[[str], bool]
    ) -> str | None:
        """The route ``name`` stands for, or None. ``serves(route)``: it can serve this API."""
        if name in routes:
            return name
        alias = self.aliases.get(name)
        if alias is not None:
            return alias
        for p in self.patterns:
            if p.regex.fullmatch(name) and serves(p.route):
                return p.route
        if self.default is not None and serves(self.default):
            return self.default
        return None


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def parse_model_names(root: Reader, routes: Mapping[str, Route]) -> ModelNames:
    r = root.child("model_names")
    r.mapping(["aliases", "patterns", "default"], optional=True)

    def target(t: Reader) -> str:
        name = t.string()
        if name not in routes:
            shown = ", ".join(sorted(routes)[:20])
            raise t.fail(f"no route or model named {name!r}; defined: {shown}")
        return name

    aliases_r = r.child("aliases")
    aliases: dict[str, str] = {}
    for alias in aliases_r.mapping(optional=True):
        a = aliases_r.child(alias)
        if not _PATTERN.match(alias) or "*" in alias:
            raise a.fail("an alias is a model name: letters, digits and . _ : / @ + - (max 128)")
        if alias in routes:
            raise a.fail(
                f"{alias!r} is already a route or model name, which wins over an alias; "
                "remove one of them"
            )
        aliases[alias] = target(a)

    patterns_r = r.child("patterns")
    patterns: list[Pattern] = []
    for pattern in patterns_r.mapping(optional=True):
        p = patterns_r.child(pattern)
        if not _PATTERN.match(pattern) or "*" not in pattern:
            raise p.fail(
                "a pattern is a model name with at least one '*' (any run of characters), "
                "such as claude-* or gpt-5*"
            )
        patterns.append(Pattern(pattern, target(p), _compile(pattern)))
    # Stable: between patterns as specific, the one listed first stays first.
    patterns.sort(key=lambda p: -p.specificity)

    default_r = r.child("default")
    default = None if default_r.value is None else target(default_r)
    return ModelNames(aliases=aliases, patterns=tuple(patterns), default=default)
