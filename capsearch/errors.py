"""The error every capsearch command turns into one line and exit 2."""


class ConfigError(ValueError):
    """Input that cannot be run as given; the message names the file, flag or key and what to fix."""


def few(names: list[str], most: int = 3) -> str:
    """'a, b, c and 4 more': the first names of a list, for a one-line message."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
