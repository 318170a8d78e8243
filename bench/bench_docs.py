"""The documentation: the README's size, the site's build time and the Python API examples' run time.

    python bench/bench_docs.py [--runs 3] [--before REV]

Builds the site with `mkdocs build --strict` (the docs extra) as tests/test_docs.py does; the
Python API page runs its examples at build time and prints how long they took, which is read
back from the page. `--before REV` also gives the README's size at that git revision.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(site: Path) -> tuple[float, float]:
    """(build seconds, the API examples' seconds as the page reports them)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    seconds = time.perf_counter() - start
    page = (site / "api" / "index.html").read_text()
    examples = re.findall(r"the examples on this page took ([0-9.]+) s", page)
    return seconds, float(examples[-1])


def readme_size(text: str) -> str:
    return f"{len(text.splitlines())} lines, {len(text.encode()):,} bytes"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", default=None, help="a git revision whose README to measure too")
    args = parser.parse_args()
    rows = [("README", readme_size((ROOT / "README.md").read_text()))]
    if args.before:
        old = subprocess.run(
            ["git", "show", f"{args.before}:README.md"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        rows.append((f"README at {args.before}", readme_size(old)))
    builds, examples = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            seconds, example = build(Path(tmp) / f"site{run}")
            builds.append(seconds)
            examples.append(example)
    pages = len(list((ROOT / "docs").rglob("*.md")))
    rows += [
        ("pages", str(pages)),
        (
            "mkdocs build --strict",
            f"{min(builds):.1f} s best of {args.runs} (median {statistics.median(builds):.1f}, max {max(builds):.1f})",
        ),
        (
            "Python API examples (run at build)",
            f"{min(examples):.1f} s best of {args.runs} (median {statistics.median(examples):.1f}, "
            f"max {max(examples):.1f})",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  measured")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
