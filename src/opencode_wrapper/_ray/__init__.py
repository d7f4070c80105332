"""The Ray engine's parts (``opencode_wrapper.ray`` is the public face): router, node agent, run handle."""
