"""Warm servers for one-shot runs: ``ServerPool`` (see :mod:`opencode_wrapper.backends.pool`)."""

from opencode_wrapper.backends.pool import ServerPool, default_max_servers

__all__ = ["ServerPool", "default_max_servers"]
