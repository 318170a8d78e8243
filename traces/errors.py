"""The one error type of traces/: a user's input that cannot become a Workload."""


class TraceError(ValueError):
    """A trace file or trace option that cannot be used; the message says what to fix."""
