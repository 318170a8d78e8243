"""The `capsim` command line (click only): one module a command; options/ declares each flag once."""

from capsim.capsearch.cli.main import main, run

__all__ = ["main", "run"]
