"""One session turn on a server: when it is over (tracker), the callbacks, structured output, the engine."""
