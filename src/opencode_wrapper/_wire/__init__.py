"""One parser per wire format, each producing the same typed events (``_model.event``)."""
