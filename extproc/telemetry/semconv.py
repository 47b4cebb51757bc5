"""GenAI semantic convention names: the released ones, or the latest on request.

The GenAI conventions are in development and renaming. By default sidegate
emits the names of semantic conventions v1.41.0, the last release that held
them; ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` switches to
the latest (the GenAI conventions' own repository), as the OpenTelemetry
instrumentations do:

===============================  ===========================================
v1.41.0 (default)                latest
===============================  ===========================================
gen_ai.client.token.usage        gen_ai.client.inference.usage.input_tokens,
(histogram, gen_ai.token.type)   .output_tokens, .cache_read.input_tokens,
                                 .cache_write.input_tokens,
                                 .reasoning.output_tokens (counters), and
                                 gen_ai.client.inference.operation.input_tokens
                                 / .output_tokens (histograms)
gen_ai.client.operation.duration gen_ai.client.inference.duration
gen_ai.client.operation.         gen_ai.client.inference.time_to_first_chunk
time_to_first_chunk
gen_ai.usage.cache_creation.     gen_ai.usage.cache_write.input_tokens
input_tokens (span)
===============================  ===========================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
LATEST = "gen_ai_latest_experimental"

# Bucket boundaries the conventions ask for.
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
# Time to first chunk: most answers start within a second or two.
TTFC_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Names:
    latest: bool
    duration: str
    time_to_first_chunk: str
    cache_write_attribute: str


RELEASED = Names(
    latest=False,
    duration="gen_ai.client.operation.duration",
    time_to_first_chunk="gen_ai.client.operation.time_to_first_chunk",
    cache_write_attribute="gen_ai.usage.cache_creation.input_tokens",
)
EXPERIMENTAL = Names(
    latest=True,
    duration="gen_ai.client.inference.duration",
    time_to_first_chunk="gen_ai.client.inference.time_to_first_chunk",
    cache_write_attribute="gen_ai.usage.cache_write.input_tokens",
)


def names(env: dict[str, str] | os._Environ[str] = os.environ) -> Names:
    opted = {v.strip() for v in env.get(OPT_IN_ENV, "").split(",")}
    return EXPERIMENTAL if LATEST in opted else RELEASED
