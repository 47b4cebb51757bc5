"""Token usage of one response, normalised across provider APIs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    # All prompt tokens, cache reads and cache writes included, so that budgets
    # and prices see one number whatever the provider reported.
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def as_int(value: object) -> int:
    """A token count from provider JSON; anything but a non-negative int counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
