"""Skips that CI must not take.

A test that needs something a laptop may lack (root, iproute2, iptables,
redis-server) skips there, but CI installs all of it, so under ``CI=true`` the
same condition is a failure: a missing dependency must never turn the suite
green by running less of it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: this test must run here, not be skipped)")
    pytest.skip(reason)
