"""The machinery of ``run_many``: its values and its scheduler."""
