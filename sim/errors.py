"""The one error type of sim/: a deployment or run that cannot be simulated as asked."""


class SimulationError(ValueError):
    """The message says what to fix."""
