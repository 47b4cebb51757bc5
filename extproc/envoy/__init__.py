"""Envoy's configuration, generated from the gateway config: the bootstrap, the
watched xDS files, the local replies, and the admin client.
"""
