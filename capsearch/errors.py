"""The error every capsearch command turns into one line and exit 2."""


class ConfigError(ValueError):
    """Input that cannot be run as given; the message names the file, flag or key and what to fix."""
