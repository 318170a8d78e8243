"""The trial cache as a folder: whose it is, what is in it, and pruning it by age or size.

Entries are `<key>.trial.parquet` files (trials.TrialCache). A dotted temporary name of an entry
is one being written, or one a killed process left half-written; a folder named by a key is from
an older capsim (TRIAL_SCHEMA < 3) and is never read again. capsim removes only names of these
shapes, and uses only a folder that is its own: one with its CACHEDIR.TAG (the standard marker
of a cache folder), a new or empty one, or one that holds nothing but capsim's entries.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from capsim.capsearch.errors import ConfigError, few
from capsim.common.files import write_atomically

ENTRY_SUFFIX = ".trial.parquet"
ENTRY = re.compile(r"[0-9a-f]{24}\.trial\.parquet")
# write_atomically's temporary names: of an entry, or of the tag (another process claiming the folder)
LEFTOVER = re.compile(r"\.([0-9a-f]{24}\.trial\.parquet|CACHEDIR\.TAG)\.[0-9]+\..+\.tmp")
OLD_FORMAT = re.compile(r"[0-9a-f]{16,64}")  # a trial folder of capsim before TRIAL_SCHEMA 3
TAG = "CACHEDIR.TAG"
TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by capsim (its trial cache).\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)

LEFTOVER_AGE_S = 600  # a temporary name untouched this long belongs to no live writer
UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class Item:
    path: Path
    size: int
    last_used: float


@dataclass
class Contents:
    entries: list[Item] = field(default_factory=list)
    leftovers: list[Item] = field(default_factory=list)  # temporary names: being written, or left by a kill
    old_format: list[Item] = field(default_factory=list)

    @property
    def entry_bytes(self) -> int:
        return sum(i.size for i in self.entries)


def claim(folder: Path, flag: str = "--cache-dir") -> Path:
    """folder as capsim's trial cache, made and tagged if need be; refused (ConfigError) where it
    holds files capsim did not write, so that no prune or sweep can ever touch them."""
    try:
        if (folder / TAG).is_file() and (folder / TAG).read_text().startswith(TAG_TEXT.splitlines()[0]):
            return folder
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{flag} {folder} is a file: give a folder for the trial cache")
        foreign = sorted(p.name for p in folder.iterdir() if not is_ours(p)) if folder.is_dir() else []
        if foreign:
            raise ConfigError(
                f"{flag} {folder} holds files capsim did not write ({few(foreign)}): give capsim a folder of its own "
                "for its trial cache"
            )
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / TAG, lambda tmp: Path(tmp).write_text(TAG_TEXT))
    except OSError as error:
        raise ConfigError(f"{flag} {folder}: {error.strerror or error}") from None
    return folder


def is_ours(path: Path) -> bool:
    """A name of one of capsim's cache entries, temporary entries or old-format trial folders."""
    name = path.name
    return (
        ENTRY.fullmatch(name) is not None
        or LEFTOVER.fullmatch(name) is not None
        or name == TAG
        or (OLD_FORMAT.fullmatch(name) is not None and path.is_dir() and not path.is_symlink())
    )


def scan(folder: Path, folder_sizes: bool = True) -> Contents:
    """The folder's entries, leftovers and old-format entries; folder_sizes=False leaves the
    (old-format) folders' sizes at 0 rather than walking them."""
    contents = Contents()
    if not folder.is_dir():
        return contents
    with os.scandir(folder) as listing:
        for entry in listing:
            try:
                stat = entry.stat(follow_symlinks=False)
                is_file = entry.is_file(follow_symlinks=False)
                size = stat.st_size if is_file else tree_size(Path(entry.path)) if folder_sizes else 0
            except OSError:
                continue  # removed meanwhile
            item = Item(Path(entry.path), size, stat.st_mtime)
            if LEFTOVER.fullmatch(entry.name):
                contents.leftovers.append(item)
            elif ENTRY.fullmatch(entry.name) and is_file:
                contents.entries.append(item)
            elif OLD_FORMAT.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                contents.old_format.append(item)  # anything else is not capsim's: never listed, never removed
    return contents


def tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def remove(item: Item) -> None:
    if item.path.is_dir() and not item.path.is_symlink():
        shutil.rmtree(item.path, ignore_errors=True)
    else:
        item.path.unlink(missing_ok=True)


def remove_leftovers(folder: Path, contents: Contents | None = None, old_format: bool = True) -> list[Item]:
    """Remove what killed writers left (temporary names idle for 10 minutes), and old-format entries."""
    contents = contents or scan(folder, folder_sizes=False)
    now = time.time()
    gone = [i for i in contents.leftovers if now - i.last_used > LEFTOVER_AGE_S] + (
        contents.old_format if old_format else []
    )
    for item in gone:
        remove(item)
    return gone


def prune(folder: Path, older_than_s: float | None, max_bytes: int | None) -> tuple[list[Item], Contents]:
    """Remove entries last used longer ago than older_than_s, then the least recently used ones
    until the entries take at most max_bytes; leftovers and old-format entries always go."""
    if not folder.is_dir():
        return [], Contents()
    contents = scan(claim(folder))
    gone = remove_leftovers(folder, contents)
    kept = sorted(contents.entries, key=lambda i: i.last_used, reverse=True)
    if older_than_s is not None:
        cutoff = time.time() - older_than_s
        gone += [i for i in kept if i.last_used < cutoff]
        kept = [i for i in kept if i.last_used >= cutoff]
    if max_bytes is not None:
        total = 0
        for n, item in enumerate(kept):
            total += item.size
            if total > max_bytes:
                gone += kept[n:]
                kept = kept[:n]
                break
    for item in gone:
        remove(item)
    return gone, Contents(entries=kept)


def parse_size(text: str) -> int:
    """'500MB', '2G', '1.5GiB', '800k' -> bytes (decimal units unless written with an i)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise ConfigError(f"--max-size {text!r}: give a size such as 500MB, 2GB or 1.5GiB")
    size = float(match.group(1)) * UNITS[match.group(2).lower()]
    if not size < 1e18:
        raise ConfigError(f"--max-size {text!r}: give a size below 1,000 PB")
    return int(size)


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '2w', '45s' -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhdw])\s*", text.lower())
    if not match:
        raise ConfigError(f"--older-than {text!r}: give an age such as 30d, 12h, 90m or 2w")
    age = float(match.group(1)) * SECONDS[match.group(2)]
    if not age < 1e12:
        raise ConfigError(f"--older-than {text!r}: give an age below 30,000 years")
    return age


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
