"""A run's output folder, written as a set, and the CSV and strict JSON files in it.

Every run writes to a folder of its own: by default a new one under capsim-results/<command>/,
named by the time and reserved at once (mkdir is atomic, so two runs started in the same second
get two folders); with -o, the folder given. Files are written to a hidden staging folder beside
it and appear together when the run succeeds (one rename); a run that fails or is interrupted
leaves the folder as it was.

capsim removes only what it wrote: each results folder holds a marker (MARKER) listing its files.
--overwrite replaces a folder whose files are all on that list, and refuses one that holds
anything else.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

from capsim.capsearch.errors import ConfigError, few
from capsim.common.files import strict_dumps, write_atomically

RESULTS_ROOT = Path("capsim-results")
MARKER = ".capsim-results.json"  # {"files": [...]}: what capsim wrote in this folder


def write_csv(path: Path, rows, columns) -> Path:
    """Rows (dicts) under a header of `columns`; keys not among them are left out."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    return path


def write_json(path: Path, document, indent: int = 2) -> Path:
    """Strict JSON (NaN and infinities as null)."""
    text = strict_dumps(document, indent=indent)
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))
    return path


def new_file(path: Path, overwrite: bool, inputs=(), flag: str = "-o") -> Path:
    """path, checked before any work: never one of the command's inputs, and not an existing file
    unless --overwrite."""
    for source in inputs:
        if source is not None and path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise ConfigError(f"{flag} {path} is the input {source}: give another file to write")
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file")
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{flag} {path} already exists: give a new file{'' if flag == '-o' else ' with -o'}, "
            "or --overwrite to replace it"
        )
    return path


def written_by_capsim(folder: Path) -> set[str] | None:
    """The files capsim's marker lists in folder (relative paths), or None where it has no marker."""
    try:
        files = json.loads((folder / MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return {str(f) for f in files} if isinstance(files, list) else None


def foreign_files(folder: Path) -> list[str]:
    """What folder holds that capsim's marker does not list (everything, without a marker)."""
    ours = written_by_capsim(folder) or set()
    found = []
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if name != MARKER and (path.is_symlink() or not path.is_dir()) and name not in ours:
            found.append(name)
    return found


def results_dir(requested: Path | None, command: str, overwrite: bool) -> Path:
    """The folder this run will fill; checked before any work, so a refusal costs nothing."""
    if requested is None:
        return reserve(RESULTS_ROOT / command)
    if requested.exists() and not requested.is_dir():
        raise ConfigError(f"-o {requested}: is a file; give a folder")
    if not requested.is_dir() or not any(requested.iterdir()):
        return requested
    here = Path.cwd().resolve()
    if requested.resolve() == here or requested.resolve() in here.parents:
        raise ConfigError(f"-o {requested} is the current folder or holds it: give a folder of its own")
    foreign = foreign_files(requested)
    if foreign:
        raise ConfigError(
            f"-o {requested} holds files capsim did not write ({few(foreign)}): give a new or empty folder"
        )
    if not overwrite:
        raise ConfigError(
            f"-o {requested} already holds a capsim result: give a new folder, or --overwrite to replace it"
        )
    return requested


def reserve(parent: Path) -> Path:
    """A new folder under parent named by the time, made now so that no other run takes it."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot write results under {parent}: {error.strerror or error}") from None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        folder = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise ConfigError(f"cannot write results under {parent}: {error.strerror or error}") from None
        mark(folder, [])
        atexit.register(release, folder)  # a run that ends before writing its results leaves no empty folder
        return folder
    raise ConfigError(f"{parent} holds 10,000 results of this second: give -o")


def mark(folder: Path, files: list[str]) -> None:
    (folder / MARKER).write_text(json.dumps({"files": files}, indent=1) + "\n")


def record(folder: Path, paths) -> None:
    """Add files written into a finished results folder to its marker's list."""
    ours = written_by_capsim(folder) or set()
    mark(folder, sorted(ours | {Path(p).relative_to(folder).as_posix() for p in paths}))


def release(folder: Path) -> None:
    if is_reservation(folder):
        shutil.rmtree(folder, ignore_errors=True)


def is_reservation(folder: Path) -> bool:
    """A folder reserve() made that no run has filled: its marker and nothing else."""
    try:
        return [p.name for p in folder.iterdir()] == [MARKER] and written_by_capsim(folder) == set()
    except OSError:
        return False


class ResultSet:
    """with ResultSet(folder) as staging: write every file under staging; on success they
    replace folder's contents at once, on failure none of them appear."""

    def __init__(self, folder: Path, keep_on_failure: tuple[str, ...] = ()):
        self.folder = folder
        self.staging = folder.parent / f".{folder.name}.staging-{os.getpid()}"
        self.keep_on_failure = keep_on_failure  # logs worth reading after a failure: kept beside the folder

    def __enter__(self) -> Path:
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir()
        except OSError as error:
            raise ConfigError(f"cannot write results under {self.folder.parent}: {error.strerror or error}") from None
        return self.staging

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            for name in self.keep_on_failure:
                if (self.staging / name).is_file():
                    kept = self.folder.parent / f"{self.folder.name}.failed.{name}"
                    os.replace(self.staging / name, kept)
                    print(f"kept for reading: {kept}", file=sys.stderr)
            shutil.rmtree(self.staging, ignore_errors=True)
            release(self.folder)
            return
        mark(
            self.staging,
            sorted(p.relative_to(self.staging).as_posix() for p in self.staging.rglob("*") if not p.is_dir()),
        )
        old = self.folder.parent / f".{self.folder.name}.replaced-{os.getpid()}"
        try:
            if self.folder.exists():
                foreign = foreign_files(self.folder)  # files put there while this run worked are never removed
                if foreign:
                    raise ConfigError(
                        f"{self.folder} now holds files capsim did not write ({few(foreign)}); "
                        f"the results were not written"
                    )
                os.replace(self.folder, old)
            try:
                os.replace(self.staging, self.folder)
            except OSError:
                if old.exists():
                    os.replace(old, self.folder)  # the earlier results stay
                raise
        except OSError as error:
            raise ConfigError(f"cannot write results to {self.folder}: {error.strerror or error}") from None
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
