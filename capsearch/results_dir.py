"""A run's output folder, written as a set, and the CSV and strict JSON files in it.

Every run writes to a folder of its own: by default a new one named by the time under
capsim-results/<command>/; with -o, the folder given, refused if it already holds something
unless --overwrite. Files are written to a hidden staging folder beside it and appear together
when the run succeeds (one rename); a run that fails or is interrupted leaves the folder as it was.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from datetime import datetime
from pathlib import Path

import click

from capsim.capsearch.errors import ConfigError
from capsim.traces import strict_dumps, write_atomically

RESULTS_ROOT = Path("capsim-results")


def output_options(command: str):
    """-o/--output-dir and --overwrite, for a command whose results go to capsim-results/<command>/."""
    def wrap(function):
        function = click.option("--overwrite", is_flag=True, help="Replace what the -o folder holds.")(function)
        return click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=None,
                            help=f"Folder for the results [default: a new one, {RESULTS_ROOT}/{command}/<date-time>]; "
                                 "one that holds something is refused without --overwrite.")(function)
    return wrap


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


def results_dir(requested: Path | None, command: str, overwrite: bool) -> Path:
    """The folder this run will fill; checked before any work, so a refusal costs nothing."""
    if requested is None:
        base = RESULTS_ROOT / command / datetime.now().strftime("%Y%m%d-%H%M%S")
        folder, n = base, 1
        while folder.exists():
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        return folder
    if requested.exists() and not requested.is_dir():
        raise ConfigError(f"-o {requested}: is a file; give a folder")
    if requested.is_dir() and any(requested.iterdir()) and not overwrite:
        raise ConfigError(f"-o {requested} already holds results: give a new folder, or --overwrite to replace them")
    return requested


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
                    click.echo(f"kept for reading: {kept}", err=True)
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        old = self.folder.parent / f".{self.folder.name}.replaced-{os.getpid()}"
        try:
            if self.folder.exists():
                os.replace(self.folder, old)
            os.replace(self.staging, self.folder)
        except OSError as error:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise ConfigError(f"cannot write results to {self.folder}: {error.strerror or error}") from None
        finally:
            shutil.rmtree(old, ignore_errors=True)
