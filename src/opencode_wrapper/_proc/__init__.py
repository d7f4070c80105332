"""Process ownership: finding opencode, its environment, and owning its process tree."""
