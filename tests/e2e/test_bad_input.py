"""Every bad input, end to end: its error code and message, and the daemon lives on.

One real virnucd (one worker) serves the whole table. A bad input is refused either
at `submit` (cheap checks: `invalid_input`, `conflict`) or, when only reading the
whole file shows the problem, the job is accepted and then ends `failed` with an
error naming the file, the line and the reason (the planner's full scan), leaving
no output file behind. Windows line endings and lowercase bases are valid input
and must give the very outputs of the plain, uppercase file.
"""

from __future__ import annotations

import gzip
import random
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from virnuc.pipeline.outputs import OUTPUT_NAMES, PREDICTIONS

from bench.synthetic import random_lengths, write_fasta
from tests.support.harness import Daemon, running_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("bad-input") / "state", demo_cache) as daemon:
        yield daemon


def valid_fasta(path: Path, count: int = 6, seed: int = 5) -> Path:
    write_fasta(path, random_lengths(count, seed=seed, low=200, high=900), seed=seed)
    return path


def submit(daemon: Daemon, fasta: Path, out: Path, **extra: Any) -> dict[str, Any]:
    return daemon.client.call("submit", input=str(fasta), output=str(out), profile="demo", **extra)


def assert_still_answers(daemon: Daemon) -> None:
    assert daemon.client.call("ping")["ok"], daemon.log_tail()


def assert_no_outputs(out: Path) -> None:
    """Nothing that could pass for a result: no final file, no temporary one."""
    if not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n in OUTPUT_NAMES or n.endswith(".partial")], names


# --- the table -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A bad input: how to make it, and what the daemon must say about it.

    `make(dir)` returns (input, output). `stage` is where it is refused: "submit"
    (an error reply with `code`) or "job" (accepted, then `failed`). `reason` is a
    regex the message must match; `line` (for "job" cases) the line it must name
    (or a function of the input that computes it).
    """

    make: Callable[[Path], tuple[Path, Path]]
    stage: str
    code: str
    reason: str
    line: int | Callable[[Path], int] | None = None


def _input(name: str, content: bytes) -> Callable[[Path], tuple[Path, Path]]:
    def make(tmp: Path) -> tuple[Path, Path]:
        path = tmp / name
        path.write_bytes(content)
        return path, tmp / "out"

    return make


def _missing(tmp: Path) -> tuple[Path, Path]:
    return tmp / "absent.fa", tmp / "out"


def _directory(tmp: Path) -> tuple[Path, Path]:
    (tmp / "a_dir.fa").mkdir()
    return tmp / "a_dir.fa", tmp / "out"


def _name_too_long(tmp: Path) -> tuple[Path, Path]:
    return tmp / ("x" * 300) / "in.fa", tmp / "out"


def _symlink_loop(tmp: Path) -> tuple[Path, Path]:
    (tmp / "loop_a").symlink_to(tmp / "loop_b")
    (tmp / "loop_b").symlink_to(tmp / "loop_a")
    return tmp / "loop_a", tmp / "out"


def _binary() -> bytes:
    data = random.Random(3).randbytes(4096)
    return b"\x00\x01" + data  # neither '>' nor the gzip magic at the start


def _truncated_gz(tmp: Path) -> tuple[Path, Path]:
    plain = valid_fasta(tmp / "whole.fa", count=40)
    whole = gzip.compress(plain.read_bytes())
    path = tmp / "cut.fa.gz"
    path.write_bytes(whole[: len(whole) // 2])
    return path, tmp / "out"


def _first_unreadable_line(path: Path) -> int:
    """The line the cut falls in: one past the last line the gzip data still holds."""
    return zlib.decompressobj(wbits=31).decompress(path.read_bytes()).count(b"\n") + 1


def _output_under_a_file(tmp: Path) -> tuple[Path, Path]:
    # We run as root, so file modes do not make a directory unwritable; a path whose
    # parent is a regular file cannot be created by anyone.
    (tmp / "plain_file").write_text("not a directory\n")
    return valid_fasta(tmp / "in.fa"), tmp / "plain_file" / "out"


def _output_is_a_file(tmp: Path) -> tuple[Path, Path]:
    (tmp / "out").write_text("not a directory\n")
    return valid_fasta(tmp / "in.fa"), tmp / "out"


FASTA_HEAD = b">ok1 fine\nACGTACGTAC\n"
FASTQ_HEAD = b"@ok1 fine\nACGTACGTAC\n+\n@+IIIIIIII\n"  # a quality line may begin with '@'

CASES = {
    "missing file": Case(_missing, "submit", "invalid_input", r"no such file"),
    "path too long": Case(_name_too_long, "submit", "invalid_input", r"File name too long"),
    "symlink loop": Case(_symlink_loop, "submit", "invalid_input", r"[Ss]ymlink loop"),
    "directory": Case(
        _directory, "submit", "invalid_input", r"is a directory, not a FASTA or FASTQ file"
    ),
    "empty file": Case(_input("empty.fa", b""), "submit", "invalid_input", r"empty file"),
    "binary data": Case(
        _input("blob.fa", _binary()),
        "submit",
        "invalid_input",
        r"binary data, not a FASTA or FASTQ file",
    ),
    "neither FASTA nor FASTQ": Case(
        _input("notes.txt", b"hello\n"), "submit", "invalid_input", r"not a FASTA or FASTQ file"
    ),
    "FASTQ quality of the wrong length": Case(
        _input("short_qual.fq", FASTQ_HEAD + b"@r2\nACGTA\n+\nIIII\n"),
        "job",
        "",
        r"the quality line of read 'r2' has 4 characters, its sequence 5",
        line=8,
    ),
    "FASTQ without its '+' line": Case(
        _input("no_plus.fq", FASTQ_HEAD + b"@r2\nACGT\nIIII\n@r3\nACGT\n+\nIIII\n"),
        "job",
        "",
        r"missing '\+' line after the sequence of read 'r2' \(header on line 5\)",
        line=7,
    ),
    "FASTQ truncated record": Case(
        _input("cut.fq", FASTQ_HEAD + b"@r2\nACGT\n"),
        "job",
        "",
        r"truncated record: the file ends \(after line 6\) inside read 'r2', before its '\+'",
        line=5,
    ),
    "FASTQ.gz truncated record": Case(
        _input("cut.fq.gz", gzip.compress(FASTQ_HEAD + b"@r2\nACGT\n+\n")),
        "job",
        "",
        r"truncated record: .* inside read 'r2', before its quality line",
        line=5,
    ),
    "binary inside FASTA": Case(
        _input("mixed.fa", FASTA_HEAD + b">r2\n" + bytes(range(256)) + b"\n"),
        "job",
        "",
        r"non-text bytes: binary data, not FASTA",
        line=4,
    ),
    "protein FASTA": Case(
        _input("protein.fa", b">p1 kinase\nMKVLAAGIVEQLLK\n"),
        "job",
        "",
        r"characters that are not nucleotides: 'EILQ' \(protein FASTA\?",
        line=2,
    ),
    "record with no sequence": Case(
        _input("noseq.fa", FASTA_HEAD + b">empty_one\n>r3\nACGT\n"),
        "job",
        "",
        r"record 'empty_one' has no sequence",
        line=3,
    ),
    "record with no sequence at the end": Case(
        _input("noseq_end.fa", FASTA_HEAD + b">last_one\n\n"),
        "job",
        "",
        r"record 'last_one' has no sequence",
        line=3,
    ),
    "duplicate ids": Case(
        _input("dups.fa", FASTA_HEAD + b">r2\nACGT\n>ok1 again\nGGCC\n"),
        "job",
        "",
        r"duplicate record id 'ok1' \(first on line 1\).*must be unique",
        line=5,
    ),
    "truncated gz": Case(
        _truncated_gz,
        "job",
        "",
        r"the compressed data ends early.*truncated \.gz\? Copy or compress the file again",
        line=_first_unreadable_line,
    ),
    "output under a regular file": Case(
        _output_under_a_file, "submit", "invalid_input", r"plain_file is a file, not a directory"
    ),
    "output is a regular file": Case(
        _output_is_a_file, "submit", "invalid_input", r"exists and is not a directory"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_named_and_the_daemon_lives_on(
    daemon: Daemon, tmp_path: Path, case: Case
) -> None:
    fasta, out = case.make(tmp_path)
    reply = submit(daemon, fasta, out)
    if case.stage == "submit":
        assert reply["ok"] is False, reply
        assert reply["error"]["code"] == case.code, reply
        message = reply["error"]["message"]
        named = out if "output" in message.split(":")[0] else fasta
        assert str(named) in message, message
        assert re.search(case.reason, message), message
    else:
        assert reply["ok"], reply
        status = daemon.client.wait_state(reply["result"]["job_id"], ("done", "failed"), 60)
        assert status["state"] == "failed", status
        assert status["error_code"] == "invalid_input", status
        error = status["error"]
        line = case.line(fasta) if callable(case.line) else case.line
        where = rf"{re.escape(str(fasta))}, line {line}: "
        assert re.search(where + case.reason, error), error
    assert_no_outputs(out)
    assert_still_answers(daemon)


# --- valid variants: Windows line endings, lowercase ------------------------------------


def _recase(text: str, case: Callable[[str], str]) -> str:
    """Change the case of sequence lines only: ids must stay as they are."""
    return "".join(
        line if line.startswith(">") else case(line) for line in text.splitlines(keepends=True)
    )


def run_job(daemon: Daemon, fasta: Path, out: Path, **extra: Any) -> str:
    reply = submit(daemon, fasta, out, **extra)
    assert reply["ok"], reply
    status = daemon.client.wait_state(reply["result"]["job_id"], ("done", "failed", "killed"))
    assert status["state"] == "done", status
    return (out / PREDICTIONS).read_text()


def test_windows_line_endings_and_lowercase_give_the_same_outputs(
    daemon: Daemon, tmp_path: Path
) -> None:
    text = valid_fasta(tmp_path / "mixed.fa", count=8, seed=9).read_text()
    upper = tmp_path / "upper.fa"
    upper.write_text(_recase(text, str.upper))
    variants = {
        "crlf.fa": _recase(text, str.upper).replace("\n", "\r\n"),
        "lower.fa": _recase(text, str.lower),
        "lower_crlf.fa": _recase(text, str.lower).replace("\n", "\r\n"),
    }
    expected = run_job(daemon, upper, tmp_path / "out-upper")
    assert expected.count("\n") > 8  # rows were scored: the comparison means something
    for name, content in variants.items():
        path = tmp_path / name
        path.write_bytes(content.encode())
        assert run_job(daemon, path, tmp_path / f"out-{name}") == expected, name
    assert_still_answers(daemon)


def test_output_holding_results_is_a_conflict_unless_forced(daemon: Daemon, tmp_path: Path) -> None:
    fasta = valid_fasta(tmp_path / "in.fa")
    out = tmp_path / "out"
    first = run_job(daemon, fasta, out)
    reply = submit(daemon, fasta, out)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "conflict"
    message = reply["error"]["message"]
    for part in (str(out), PREDICTIONS, "--force"):
        assert part in message, message
    (out / PREDICTIONS).write_text("stale\n")
    assert run_job(daemon, fasta, out, force=True) == first
    assert_still_answers(daemon)


def test_an_id_repeated_in_another_input_fails_the_job_naming_both_files(
    daemon: Daemon, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.fa", tmp_path / "b.fq.gz"
    first.write_bytes(FASTA_HEAD + b">r2\nACGT\n")
    second.write_bytes(gzip.compress(b"@r3\nACGT\n+\nIIII\n@r2 again\nGGCC\n+\nIIII\n"))
    out = tmp_path / "out"
    reply = daemon.client.call(
        "submit", inputs=[str(first), str(second)], output=str(out), profile="demo"
    )
    assert reply["ok"], reply
    status = daemon.client.wait_state(reply["result"]["job_id"], ("done", "failed"), 60)
    assert status["state"] == "failed", status
    assert status["error_code"] == "invalid_input", status
    assert status["inputs"] == [str(first), str(second)]
    where = rf"{re.escape(str(second))}, line 5: duplicate record id 'r2' "
    assert re.search(where + rf"\(first in {re.escape(str(first))}, line 3\)", status["error"])
    assert_no_outputs(out)
    assert_still_answers(daemon)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        pytest.param({}, "'inputs' or 'input' must be given", id="neither"),
        pytest.param({"input": "/a.fa", "inputs": ["/a.fa"]}, "exactly one", id="both"),
        pytest.param({"inputs": []}, "at least one file", id="empty"),
        pytest.param({"inputs": ["/a.fa", "/a.fa"]}, "more than once", id="repeated"),
    ],
)
def test_a_submit_with_bad_inputs_is_a_bad_request(
    daemon: Daemon, tmp_path: Path, args: dict[str, Any], problem: str
) -> None:
    reply = daemon.client.call("submit", output=str(tmp_path / "out"), profile="demo", **args)
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == "bad_request", reply
    assert problem in reply["error"]["message"], reply
    assert_still_answers(daemon)


def test_every_input_is_checked_at_submit_and_the_bad_one_named(
    daemon: Daemon, tmp_path: Path
) -> None:
    good, missing = valid_fasta(tmp_path / "good.fa"), tmp_path / "missing.fq"
    reply = daemon.client.call(
        "submit", inputs=[str(good), str(missing)], output=str(tmp_path / "out"), profile="demo"
    )
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == "invalid_input", reply
    assert f"input {missing}: no such file" in reply["error"]["message"], reply
