"""The documentation: the site builds with `mkdocs build --strict` (links, navigation, the CLI
reference generated from the commands, and the Python API's examples run as they build), and
the README's links reach files that exist."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_LINES = 200  # the README stays a front page; the site holds the rest


def test_the_site_builds_strict_and_runs_the_api_examples(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install '.[docs]'")
    pytest.importorskip("mkdocs_click", reason="the docs extra is not installed: pip install '.[docs]'")
    pytest.importorskip("markdown_exec", reason="the docs extra is not installed: pip install '.[docs]'")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    api = (site / "api" / "index.html").read_text()
    assert "capacity " in api and "converged: True" in api and "Traceback" not in api  # the examples ran
    reference = (site / "reference" / "cli" / "index.html").read_text()
    for command in ("search", "plan", "launch", "validate", "simulate"):
        assert f"capsim {command}" in reference
    assert "--max-num-batched-tokens" in reference  # flags come from the commands themselves
    shutil.rmtree(site)


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_LINES
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert targets, "the README links into the site"
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
