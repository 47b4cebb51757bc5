"""The ext_proc service: the gRPC server and its two stages (policy, once per
request; provider, once per attempt), plus the health and message-count services.
"""
