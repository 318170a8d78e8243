"""The one error type of profiles/: a model, hardware, profile or latency query that cannot be used."""


class ProfileError(ValueError):
    """The message says what to fix."""
