"""Flags declared once in capsearch/cli/options and shared by the commands that take them."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from capsim.capsearch.cli.main import main
from capsim.capsearch.cli.options.run import Duration


@pytest.mark.parametrize(
    "unit, given, expected",
    [
        ("m", "30", 30.0),
        ("m", "90s", 1.5),
        ("m", "2h", 120.0),
        ("s", "90", 90.0),
        ("s", "1.5m", 90.0),
        ("s", "2h", 7200.0),
    ],
)
def test_a_time_limit_is_read_in_its_unit_or_the_commands(unit, given, expected):
    assert Duration(unit).convert(given, None, None) == expected


@pytest.mark.parametrize("given", ["0", "-5", "ten", "5 days", "nan"])
def test_a_time_limit_that_is_no_duration_is_refused(given):
    with pytest.raises(click.BadParameter, match="positive duration"):
        Duration("s").convert(given, None, None)


@pytest.mark.parametrize(
    "command", [["simulate", "--qps", "1"], ["search"], ["bench", "--endpoint", "http://127.0.0.1:9"]]
)
def test_every_command_refuses_a_bad_time_limit_with_exit_2(command, tmp_path):
    done = CliRunner().invoke(main, [*command, "--time-limit", "soon", "-o", str(tmp_path / "out")])
    assert done.exit_code == 2, done.output
    assert "give e.g. 90s, 30m, 2h" in done.output and not (tmp_path / "out").exists()


def test_each_shared_flag_reads_the_same_in_every_command():
    """The help of a shared flag is one text, wherever it appears."""
    helps = {}
    for name in ("simulate", "search", "bench", "confirm", "plan"):
        command = main.get_command(None, name)
        for param in command.params:
            if param.name in ("trace", "cache_dir", "goodput", "api_key", "dtype", "start_qps", "early_stop"):
                helps.setdefault(param.name, set()).add(param.help)
    assert helps and all(len(texts) == 1 for texts in helps.values()), helps
