"""The machinery behind :mod:`opencode_wrapper.sync`: a private event loop thread, and callback adapters."""
