"""The README's quick start is the contract with users and with CI: two commands, CI runs the second."""
import re

from helpers import REPO


def quick_start_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quick_start_is_exactly_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "pktmask-gui" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    test_command = quick_start_commands()[1].replace("pip install -e", "pip install -q -e")
    assert test_command in ci


def test_sample_named_in_quick_start_ships():
    first = quick_start_commands()[0]
    sample = first.split("pktmask-gui", 1)[1].strip()
    assert (REPO / sample).is_file()
