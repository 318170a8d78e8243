"""`capsim cache info` and `capsim cache prune`: the trial cache, seen and trimmed."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import click

from capsim.capsearch.capacity.cache_folder import human_bytes, parse_age, parse_size, prune, scan
from capsim.capsearch.capacity.trials import default_cache_dir
from capsim.capsearch.cli.options.run import CACHE_DIR


@click.group()
def cache() -> None:
    """The trial cache: every simulated trial, kept by content so that searches and SLO sweeps
    reuse it (one compact file a trial, ~60-140 KB for 2048 requests)."""


@cache.command()
@CACHE_DIR
def info(cache_dir: Path | None) -> None:
    """Where the cache is, how many trials it holds and their size."""
    folder = cache_dir or default_cache_dir()
    contents = scan(folder)
    entries = contents.entries
    click.echo(f"trial cache: {folder}{'' if folder.is_dir() else ' (not created yet)'}")
    click.echo(
        f"trials: {len(entries)}, {human_bytes(contents.entry_bytes)}"
        + (f" ({human_bytes(contents.entry_bytes / len(entries))} a trial)" if entries else "")
    )
    if entries:
        used = sorted(i.last_used for i in entries)
        click.echo(f"last used: oldest {_when(used[0])}, newest {_when(used[-1])}")
    if contents.leftovers:
        click.echo(
            f"being written or left by killed runs: {len(contents.leftovers)}, "
            f"{human_bytes(sum(i.size for i in contents.leftovers))}"
        )
    if contents.old_format:
        click.echo(
            f"from an older capsim (never read again; `capsim cache prune` removes them): {len(contents.old_format)}, "
            f"{human_bytes(sum(i.size for i in contents.old_format))}"
        )


@cache.command(name="prune")
@CACHE_DIR
@click.option(
    "--older-than", default=None, metavar="AGE", help="Remove trials last used longer ago than this (30d, 12h, 90m)."
)
@click.option(
    "--max-size",
    default=None,
    metavar="SIZE",
    help="Then remove the least recently used until the rest fit (500MB, 2GB).",
)
def prune_command(cache_dir: Path | None, older_than: str | None, max_size: str | None) -> None:
    """Remove trials by age or to fit a size; half-written and older-format entries always go.

    A pruned trial is simulated again when a search needs it.
    """
    folder = cache_dir or default_cache_dir()
    age = parse_age(older_than) if older_than is not None else None
    size = parse_size(max_size) if max_size is not None else None
    gone, kept = prune(folder, age, size)
    click.echo(
        f"removed {len(gone)} ({human_bytes(sum(i.size for i in gone))}) from {folder}; "
        f"kept {len(kept.entries)} trials, {human_bytes(kept.entry_bytes)}"
    )


def _when(timestamp: float) -> str:
    days = (time.time() - timestamp) / 86400
    return f"{datetime.fromtimestamp(timestamp):%Y-%m-%d %H:%M} ({days:.1f} days ago)"
