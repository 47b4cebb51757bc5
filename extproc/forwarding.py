"""Which of the app's request headers reach a provider: an allow-list by class.

An app's headers were written for the app's own world (its cookies, its
proxies' ``x-forwarded-*``, its internal ``x-*`` tags) and say nothing a
provider needs; each is one more thing that leaks, or that a provider reads in
a way sidegate did not check. So a header reaches a provider only if its class
says so:

==================  =============================================  ===============
class               headers                                        forwarded
==================  =============================================  ===============
credentials         authorization, x-api-key, api-key, cookie,     never (the
                    proxy-authorization, x-goog-api-key,           provider's own
                    openai-organization, openai-project            key is set)
sidegate, Envoy     x-sidegate-*, x-envoy-*                        never
hop-by-hop          connection, keep-alive, te, trailer,           never
                    transfer-encoding, upgrade, proxy-connection
request framing     content-type, content-length, x-request-id     always (set
                                                                   per attempt)
provider API        anthropic-version, anthropic-beta, openai-beta  yes, to providers
                                                                   of that API only
tracing             traceparent, tracestate                        yes
client              accept, user-agent                             yes
proxy               x-forwarded-*, forwarded, via, x-real-ip       no, unless allowed
everything else     any other x-*, accept-language, ...            no, unless allowed
==================  =============================================  ===============

``forward_headers.allow`` adds names or ``prefix*`` patterns to what is
forwarded (never a credential or a hop-by-hop header); ``deny`` takes any
forwarded name back, built-in ones included, except the request framing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Never forwarded, whatever the config says.
CREDENTIALS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        # They pick the account a key bills; the key is the gateway's, not the app's.
        "openai-organization",
        "openai-project",
    }
)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    }
)
NEVER_PREFIXES = ("x-sidegate-", "x-envoy-")
# Always forwarded: Envoy and the provider stage need them (the stage rewrites
# content-type and content-length for each attempt and finds the request's
# state by x-request-id).
FRAMING = frozenset({"content-type", "content-length", "x-request-id"})
# Forwarded unless denied.
DEFAULT_ALLOW = frozenset(
    {
        "anthropic-version",
        "anthropic-beta",
        "openai-beta",
        "traceparent",
        "tracestate",
        "accept",
        "user-agent",
    }
)

# Envoy matches no route for a request without x-forwarded-proto (which it
# sets itself), so this one is removed by the route, after matching.
ROUTING = frozenset({"x-forwarded-proto"})

# What a pattern in the config may look like: a lower-case header name, or a
# prefix of one followed by "*".
PATTERN = re.compile(r"^[a-z0-9!#$%&'+.^_`|~-]+\*?$")
# RFC 9110 field values are visible characters, spaces and tabs. A CR or LF
# here is a header another parser would split in two; NUL ends C strings.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def never_reason(pattern: str) -> str | None:
    """Why ``pattern`` may not be allowed (None if it may)."""
    prefix = pattern[:-1] if pattern.endswith("*") else None
    if prefix is None:
        if pattern in CREDENTIALS:
            return "a credential; the provider's own key is set instead"
        if pattern in HOP_BY_HOP:
            return "a hop-by-hop header, Envoy's to handle"
        if pattern.startswith(NEVER_PREFIXES):
            return "sidegate's or Envoy's own header"
        return None
    if prefix.startswith(NEVER_PREFIXES) or any(p.startswith(prefix) for p in NEVER_PREFIXES):
        return "it covers sidegate's or Envoy's own headers"
    covered = sorted(h for h in CREDENTIALS | HOP_BY_HOP if h.startswith(prefix))
    if covered:
        return f"it covers {', '.join(covered)}, which are never forwarded"
    return None


class HeaderFilter:
    """Decides, per header name, whether it may reach a provider."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        allow_set = set(DEFAULT_ALLOW)
        allow_set.update(allow)
        self._allow = frozenset(p for p in allow_set if not p.endswith("*"))
        self._allow_prefixes = tuple(sorted(p[:-1] for p in allow_set if p.endswith("*")))
        deny = tuple(deny)
        self._deny = frozenset(p for p in deny if not p.endswith("*"))
        self._deny_prefixes = tuple(sorted(p[:-1] for p in deny if p.endswith("*")))

    def forwarded(self, name: str) -> bool:
        if name.startswith(":") or name in FRAMING:
            return True
        if name in self._deny or name.startswith(self._deny_prefixes):
            return False
        if name in CREDENTIALS or name in HOP_BY_HOP or name.startswith(NEVER_PREFIXES):
            return False
        return name in self._allow or name.startswith(self._allow_prefixes)

    def removals(self, names: Iterable[str]) -> list[str]:
        """The names among ``names`` the policy stage removes.

        Left out: what Envoy needs to pick a route (``route_removals``).
        """
        return [n for n in names if not self.forwarded(n) and n not in ROUTING]

    def route_removals(self) -> list[str]:
        """What the route removes once it is chosen, instead of the policy stage."""
        return [n for n in sorted(ROUTING) if not self.forwarded(n)]


def bad_value(headers: Mapping[str, str]) -> str | None:
    """The name of a header whose value holds a control character, if any."""
    if not _CONTROL.search("".join(headers.values())):
        return None
    return next(name for name, value in headers.items() if _CONTROL.search(value))
