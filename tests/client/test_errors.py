"""Error replies become exit codes and messages that name what is wrong."""

from __future__ import annotations

import pytest

import virnuc.protocol as p

from tests.support.fake_daemon import Fail, FakeDaemon, run

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (p.ErrorCode.NOT_FOUND, 4),
        (p.ErrorCode.INVALID_INPUT, 4),
        (p.ErrorCode.CONFLICT, 4),
        (p.ErrorCode.FORBIDDEN, 4),
        (p.ErrorCode.STOPPING, 5),
        (p.ErrorCode.INTERNAL, 1),
        (p.ErrorCode.BAD_REQUEST, 1),
    ],
)
def test_error_replies_map_to_exit_codes(
    code: p.ErrorCode, exit_code: int, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["status"] = lambda r: Fail(code, "no job 'j9'")
    assert run(daemon, "status", "j9") == exit_code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("virnucctl: error: ")
    assert "no job 'j9'" in err
    assert "Traceback" not in err


def test_invalid_input_message_names_the_file(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    message = "input /data/x.fa: record 3 has no sequence"
    daemon.handlers["submit"] = lambda r: Fail(p.ErrorCode.INVALID_INPUT, message)
    assert run(daemon, "submit", "/data/x.fa", "--out", "/o") == 4
    assert capsys.readouterr().err == f"virnucctl: error: {message}\n"
