"""Settle quotas: correct the request's reservation by the usage its response reported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..state import RequestState
from .step import Needs

if TYPE_CHECKING:
    from ..gateway import Gateway


class SettleQuotas:
    needs = Needs.USAGE

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def __call__(self, state: RequestState) -> None:
        # The enforcer serving now: a reload carries the counters over.
        self.gw.quotas.settle(state)
