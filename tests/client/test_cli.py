"""virnucctl's command line itself: where it finds virnucd, how options may be placed,
its help and version, and a closed stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from virnuc import __version__
from virnuc.client import cli

from tests.support.fake_daemon import FakeDaemon, job, paged_list

pytestmark = pytest.mark.timeout(30)


def test_state_dir_from_the_environment(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIRNUC_STATE_DIR", str(daemon.state_dir))
    daemon.handlers["workers"] = lambda r: {"workers": []}
    assert cli.main(["workers"]) == 0
    assert capsys.readouterr().out == "no workers\n"


def test_options_may_follow_the_command(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["kill"] = lambda r: {"job_id": "j1", "state": "killed"}
    assert cli.main(["kill", "j1", "--state-dir", str(daemon.state_dir), "--timeout", "5"]) == 0


@pytest.mark.parametrize("argv", [["status"], ["list", "--json"]])
def test_output_into_a_closed_pipe_ends_quietly_with_141(
    argv: list[str], daemon: FakeDaemon
) -> None:
    """``virnucctl status | head -3``: head has gone when virnucctl writes. The pipe's
    read end is closed before virnucctl starts, so every write to stdout fails."""
    daemon.handlers["list"] = paged_list([job(f"j{i}") for i in range(3)])
    env = {**os.environ, "VIRNUC_STATE_DIR": str(daemon.state_dir)}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "virnuc.client.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            timeout=20,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")  # 128 + SIGPIPE, as a shell says of `cat`
    assert cli.EXIT_BROKEN_PIPE == 141


def test_help_lists_the_exit_codes() -> None:
    text = cli.build_parser().format_help()
    assert "Exit codes" in text
    assert "3    virnucd did not answer" in text


# --- options for every command, before or after its name ---------------------------------

#: Every command with the arguments it needs to parse.
COMMANDS: dict[str, list[str]] = {
    "submit": ["submit", "in.fa", "--out", "out"],
    "status": ["status"],
    "list": ["list"],
    "wait": ["wait", "j1"],
    "kill": ["kill", "j1"],
    "workers": ["workers"],
    "predict": ["predict", "in.fa", "--out", "out"],
    "report": ["report", "out"],
    "keys generate": ["keys", "generate"],
}
DAEMON_COMMANDS = ["submit", "status", "list", "wait", "kill", "workers"]
#: The daemon options and a value for each; ``predict`` takes only --timeout.
DAEMON_OPTIONS = {
    "--timeout": ("timeout", "7", 7.0),
    "--state-dir": ("state_dir", "/s", "/s"),
    "--endpoint": ("endpoint", "tcp://h:1", "tcp://h:1"),
    "--events-endpoint": ("events_endpoint", "tcp://h:2", "tcp://h:2"),
    "--curve-server-key": ("curve_server_key", "server.key", "server.key"),
    "--curve-client-key": ("curve_client_key", "me.key_secret", "me.key_secret"),
}


def parse(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


@pytest.mark.parametrize("name", COMMANDS)
def test_json_is_taken_before_or_after_every_command(name: str) -> None:
    argv = COMMANDS[name]
    assert parse(["--json", *argv]).json is True
    assert parse([*argv, "--json"]).json is True
    assert parse(argv).json is False


@pytest.mark.parametrize("name", DAEMON_COMMANDS)
@pytest.mark.parametrize("option", DAEMON_OPTIONS)
def test_daemon_options_are_taken_before_or_after_the_command_the_later_winning(
    name: str, option: str
) -> None:
    dest, text, value = DAEMON_OPTIONS[option]
    argv = COMMANDS[name]
    assert getattr(parse([option, text, *argv]), dest) == value
    assert getattr(parse([*argv, option, text]), dest) == value
    assert getattr(parse([option, "1", *argv, option, text]), dest) == value


def test_predict_takes_timeout_before_or_after_the_command() -> None:
    argv = COMMANDS["predict"]
    assert parse(["--timeout", "7", *argv]).timeout == 7.0
    assert parse([*argv, "--timeout", "7"]).timeout == 7.0
    assert parse(argv).timeout == cli.DEFAULT_TIMEOUT


def test_json_before_the_command_prints_json(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["kill"] = lambda r: {"job_id": "j1", "state": "killed"}
    assert cli.main(["--json", "--state-dir", str(daemon.state_dir), "kill", "j1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"job_id": "j1", "state": "killed"}


# --- --version and --help ----------------------------------------------------------------


def test_version_prints_virnucctl_and_the_package_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"virnucctl {__version__}\n"


def command_help(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal's width
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*name.split(), "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def shown_options(name: str) -> list[str]:
    """The long options of a command that its help shows (not the hidden daemon ones)."""
    parser = cli.build_parser()
    for word in name.split():
        parser = next(
            a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ).choices[word]
    return [
        flag
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
        if flag.startswith("--")
    ]


def test_submit_help_is_short_and_names_every_submit_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = command_help("submit", monkeypatch, capsys)
    assert len(text.splitlines()) <= 36  # 35 before --models
    options = shown_options("submit")
    assert {"--out", "--wait", "--force", "--precision", "--give-up-after", "--json"} <= set(
        options
    )
    for option in options:
        assert option in text


@pytest.mark.parametrize("name", COMMANDS)
def test_no_command_help_repeats_the_exit_codes_or_the_daemon_options(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = command_help(name, monkeypatch, capsys)
    assert "Exit codes" not in text
    assert "--state-dir DIR" not in text
    assert "--timeout SECONDS" not in text
    assert "virnucctl --help" in text  # where they are


def test_the_top_level_help_has_the_daemon_options_once() -> None:
    text = cli.build_parser().format_help()
    assert text.count("--state-dir DIR ") == 1
    assert "--version" in text
