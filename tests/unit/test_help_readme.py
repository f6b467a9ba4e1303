"""The README's usage synopsis and the CLI's --help cannot drift apart: every option of every
subcommand (read from click itself, so an option another branch adds only needs its synopsis
line) appears in the command's synopsis, every option the synopsis names exists, and every
subcommand has a synopsis. No TensorFlow: only the click command tree is imported."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeq.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- usage:begin -->", "<!-- usage:end -->"
_OPTION = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")


def _synopsis() -> dict[str, set[str]]:
    """Options per command in the README's delimited usage block; "" holds the group's."""
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, \
        f"README.md needs one usage block between {BEGIN} and {END}"
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    found: dict[str, set[str]] = {}
    command = None
    for line in block.splitlines():
        if line.startswith("edgeq "):
            word = line.split()[1]
            command = "" if word.startswith("-") else word
            found.setdefault(command, set())
        elif not line.strip() or line.startswith("```"):
            continue
        assert command is not None, f"a usage line before any command: {line!r}"
        found[command] |= set(_OPTION.findall(line.split("#")[0]))
    return found


def _options(command: click.Command) -> set[str]:
    names = set()
    for param in command.params:
        if isinstance(param, click.Option):
            names |= {o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")}
    return names - {"--help"}


def test_every_command_has_a_synopsis_and_nothing_else_does():
    synopsis = _synopsis()
    assert set(synopsis) - {""} == set(cli.commands), (
        "README usage block and CLI commands differ: "
        f"README only {sorted(set(synopsis) - {''} - set(cli.commands))}, "
        f"CLI only {sorted(set(cli.commands) - set(synopsis))}")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_synopsis_lists_exactly_the_options_of(name):
    synopsis = _synopsis()
    in_cli = _options(cli.commands[name])
    in_readme = synopsis.get(name, set())
    assert in_cli - in_readme == set(), \
        f"edgeq {name}: options missing from README's usage synopsis: {sorted(in_cli - in_readme)}"
    assert in_readme - in_cli == set(), \
        f"edgeq {name}: README names options the CLI lacks: {sorted(in_readme - in_cli)}"


def test_group_options_and_help_pages():
    synopsis = _synopsis()
    assert _options(cli) == synopsis[""], (_options(cli), synopsis[""])
    runner = CliRunner()
    for name, command in cli.commands.items():
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        for option in _options(command):  # what --help prints is what click holds
            assert option in result.output, f"edgeq {name} --help lacks {option}"
