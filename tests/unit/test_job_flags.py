"""Every jobs/*.py entry point takes exactly the flags of its `visionlake` command, with the same meaning and help.

Both parsers are taken from running the code: each job file is run with `--help`, and so is the CLI command it
names (visionlake.operate.cli.JOB_COMMANDS); the parser that printed the help is the one compared.
"""
from __future__ import annotations

import argparse
import re
import runpy
import sys

import pytest

from tests.conftest import REPO
from tests.readme_commands import check_command, parse_command
from visionlake.operate import cli
JOBS = sorted(path.stem for path in (REPO / "jobs").glob("*.py"))


def _help_of(run, monkeypatch, capsys) -> tuple[argparse.ArgumentParser, str]:
    """Runs ``run`` (which parses ``--help``); returns the parser that printed the help, and the help."""
    printed = []
    print_help = argparse.ArgumentParser.print_help

    def record(parser, file=None):
        printed.append(parser)
        print_help(parser, file)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", record)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 0, "--help must exit 0"
    return printed[-1], capsys.readouterr().out


def _run_job_file(job: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(REPO / "jobs" / f"{job}.py"), *argv])
    runpy.run_path(str(REPO / "jobs" / f"{job}.py"), run_name="__main__")


def _options(parser: argparse.ArgumentParser) -> dict[str, tuple]:
    return {option: (action.dest, action.choices, action.default, action.type, action.help, action.nargs)
            for action in parser._actions for option in action.option_strings}


def _positionals(parser: argparse.ArgumentParser) -> list[tuple]:
    return [(action.dest, action.nargs, action.metavar) for action in parser._actions if not action.option_strings]


def _options_help(text: str) -> str:
    return text[text.index("positional arguments:"):]


def test_every_job_runs_a_visionlake_command():
    assert sorted(cli.JOB_COMMANDS) == JOBS, "map each jobs/*.py to its command in visionlake.operate.cli.JOB_COMMANDS"


@pytest.mark.parametrize("job", JOBS)
def test_a_job_takes_the_flags_of_its_command_with_the_same_help(job, monkeypatch, capsys):
    job_parser, job_help = _help_of(lambda: _run_job_file(job, ["--help"], monkeypatch), monkeypatch, capsys)
    command = cli.JOB_COMMANDS[job]
    cli_parser, cli_help = _help_of(lambda: cli.main([*command.split(), "--help"]), monkeypatch, capsys)

    assert job_parser.prog == f"jobs/{job}.py"
    assert set(_options(job_parser)) == set(_options(cli_parser))
    assert _options(job_parser) == _options(cli_parser)
    assert _positionals(job_parser) == _positionals(cli_parser)
    assert _options_help(job_help) == _options_help(cli_help)
    assert f"visionlake {command}" in job_help


@pytest.mark.parametrize("job", JOBS)
def test_a_job_turns_its_flags_into_the_same_config_as_its_command(job, monkeypatch, capsys):
    parser, _ = _help_of(lambda: _run_job_file(job, ["--help"], monkeypatch), monkeypatch, capsys)
    argv, settings, switches = ["--conf", str(REPO / "conf" / "mnist.yaml")], [], []
    for action in parser._actions:
        if action.option_strings and action.nargs == 0 and action.dest != "help":  # a switch, no config key
            argv.append(action.option_strings[-1])
            switches.append(action.dest)
        elif action.option_strings and action.dest not in ("help", "conf"):
            value = action.choices[-1] if action.choices else {int: "7", float: "7.5"}.get(action.type, "parts")
            argv += [action.option_strings[-1], value]
            key = re.search(r"\(sets ([\w.]+)", action.help)
            assert key, f"{action.option_strings[-1]}'s help must say which config key it sets"
            settings.append(f"{key.group(1)}={value}")
    argv.append("train.epochs=2")
    ran = []
    monkeypatch.setattr(cli, "_run", lambda function, args: ran.append((function, args)) or 0)

    with pytest.raises(SystemExit) as exit_:
        _run_job_file(job, argv, monkeypatch)
    assert exit_.value.code == 0
    assert cli.main([*cli.JOB_COMMANDS[job].split(), *argv]) == 0

    (job_function, job_args), (cli_function, cli_args) = ran
    assert job_function is cli_function
    assert (job_args.command, job_args.conf, job_args.overrides) == (
        cli_args.command, cli_args.conf, cli_args.overrides)
    assert set(settings) <= set(job_args.overrides) and job_args.overrides[-1] == "train.epochs=2"
    assert all(getattr(job_args, name) is getattr(cli_args, name) is True for name in switches)


@pytest.mark.parametrize("job", JOBS)
def test_the_spark_submit_command_in_a_job_docstring_runs(job, tmp_path):
    docstring = runpy.run_path(str(REPO / "jobs" / f"{job}.py"))["__doc__"]
    text = " ".join(line.strip().rstrip("\\") for line in docstring.splitlines() if line.startswith("    "))
    command = parse_command(text, f"jobs/{job}.py")
    assert command.kind == "job" and command.argv[0] == "spark-submit"
    check_command(command, tmp_path)


HELP_EXAMPLES = [(f"--help of visionlake {command}", line.strip()) for command, text in sorted(cli._EXAMPLES.items())
                 for line in text.splitlines()]
HELP_EXAMPLES += [("visionlake --help", line.strip()) for line in cli.__doc__.splitlines()
                  if line.strip().startswith("visionlake ")]


@pytest.mark.parametrize("source, line", HELP_EXAMPLES, ids=[line for _, line in HELP_EXAMPLES])
def test_the_examples_in_the_help_run(source, line, tmp_path):
    check_command(parse_command(line.split("  #")[0].strip(), source), tmp_path)
