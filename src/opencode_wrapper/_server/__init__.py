"""One opencode server (owned process or attached) and its event bus, without sessions."""
