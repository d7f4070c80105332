"""Backends: where a run happens. ``RunRequest`` in, ``RunHandle`` out (see ``base``)."""
