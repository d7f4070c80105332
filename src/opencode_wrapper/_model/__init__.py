"""The result and event model, below every transport: events, errors, the accumulator, outcomes."""
