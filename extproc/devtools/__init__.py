"""Tools for developing and measuring sidegate, not for serving: the fake
providers the tests and the demo use, the benchmark and the soak.
"""
