"""Warm servers for one-shot runs: ``ServerPool`` (the machinery is :mod:`opencode_wrapper.backends.pool`)."""

from opencode_wrapper.backends.pool import ServerPool as _PoolBackend
from opencode_wrapper.backends.pool import default_max_servers
from opencode_wrapper.server import OpenCodeServer

__all__ = ["ServerPool", "default_max_servers"]


class ServerPool(_PoolBackend):
    __doc__ = _PoolBackend.__doc__
    server_class = OpenCodeServer
