"""Private parts of :mod:`opencode_wrapper.isolation` (git, diffs, copies)."""
