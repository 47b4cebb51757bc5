"""sidegate: an AI API gateway sidecar (Envoy plus a Python ext_proc service)."""

__version__ = "0.1.0"
