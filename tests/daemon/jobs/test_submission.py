"""What `check_submission` refuses before a job exists, in process: each refusal's code
and a message naming the file (tests/e2e/test_bad_input.py sends them through virnucd)."""

from __future__ import annotations

import bz2
import lzma
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from virnuc.daemon.caller import Caller
from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.jobs import submission
from virnuc.daemon.jobs.input_check import fingerprint
from virnuc.daemon.jobs.submission import CheckedSubmission
from virnuc.pipeline.output_format import PREDICTIONS
from virnuc.protocol import ErrorCode, SubmitArgs

from tests.support.unix_users import UnixUsers, User


def valid_fasta(path: Path) -> Path:
    path.write_text(">r1\nACGTACGTAC\n")
    return path


def test_a_missing_input_is_refused_naming_it(tmp_path: Path) -> None:
    gone = tmp_path / "absent.fa"
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_input(str(gone), ("/",), None)
    assert refused.value.code == ErrorCode.INVALID_INPUT
    assert f"input {gone}: no such file" in refused.value.message


# `printf '>r1\nACGT\n' | zstd -c`: the stdlib has no zstd before Python 3.14.
ZSTD_FASTA = bytes.fromhex("28b52ffd04584900003e72310a414347540aa31db531")


@pytest.mark.parametrize(
    ("suffix", "compress", "name", "fix"),
    [
        pytest.param(".bz2", bz2.compress, "bzip2", "bunzip2 -k", id="bzip2"),
        pytest.param(".xz", lzma.compress, "xz", "unxz -k", id="xz"),
        pytest.param(".zst", lambda _: ZSTD_FASTA, "zstd", "unzstd", id="zstd"),
    ],
)
def test_a_bzip2_xz_or_zstd_input_is_refused_naming_the_format_and_the_fix(
    tmp_path: Path, suffix: str, compress: Callable[[bytes], bytes], name: str, fix: str
) -> None:
    packed = tmp_path / f"reads.fa{suffix}"
    packed.write_bytes(compress(b">r1\nACGTACGTAC\n"))
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_input(str(packed), ("/",), None)
    assert refused.value.code == ErrorCode.INVALID_INPUT
    message = refused.value.message
    assert f"input {packed} is {name}-compressed" in message
    assert f"{fix} {packed}" in message
    assert "recompress it with gzip" in message
    assert "binary data" not in message


def test_an_input_virnucd_itself_cannot_read_is_refused_saying_so(tmp_path: Path) -> None:
    """At unit level: tests run as root, who reads a file whatever its mode; what the
    kernel refuses virnucd (the caller's rights were judged already) reads so."""
    fasta = tmp_path / "secret.fa"
    with (
        pytest.raises(submission.SubmitRefused) as refused,
        submission._os_refusals("input", fasta),
    ):
        raise PermissionError(13, "Permission denied", str(fasta))
    assert refused.value.code == ErrorCode.INVALID_INPUT
    assert f"input {fasta}: Permission denied" in refused.value.message
    assert "make it readable" in refused.value.message


def test_an_output_virnucd_itself_cannot_reach_is_refused_saying_what_to_do(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    with pytest.raises(submission.SubmitRefused) as refused, submission._os_refusals("output", out):
        raise PermissionError(13, "Permission denied", str(out))
    assert refused.value.code == ErrorCode.INVALID_INPUT
    assert refused.value.message.startswith(f"output {out}: Permission denied: virnucd (uid ")
    assert "search and write the directory" in refused.value.message


# --- model_roots: which model files and directories a request may name --------------


def model_files(root: Path) -> dict[str, str]:
    """A classifier, an ESM-2 checkpoint (and its contact-regression file) and a DNABERT
    directory under `root`; only their names and kinds matter at submit."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "300_model.pth").write_bytes(b"weights")
    (root / "esm2_t2_demo.pt").write_bytes(b"weights")
    (root / "esm2_t2_demo-contact-regression.pt").write_bytes(b"weights")
    (root / "dnabert").mkdir(exist_ok=True)
    return {
        "classifier": str(root / "300_model.pth"),
        "esm": str(root / "esm2_t2_demo.pt"),
        "dnabert": str(root / "dnabert"),
    }


def model_request(tmp_path: Path, **models: str | None) -> SubmitArgs:
    return SubmitArgs(input=str(tmp_path / "in.fa"), output=str(tmp_path / "out"), **models)


def with_model_roots(tmp_path: Path, *roots: Path) -> DaemonConfig:
    return DaemonConfig(state_dir=tmp_path / "state", model_roots=tuple(map(str, roots)))


def test_models_inside_the_model_roots_are_accepted(tmp_path: Path) -> None:
    models = model_files(tmp_path / "models")
    config = with_model_roots(tmp_path, tmp_path / "models")
    spec = submission.check_models(model_request(tmp_path, **models), config).spec
    assert (spec.esm, spec.dnabert, spec.classifier) == (
        models["esm"],
        models["dnabert"],
        models["classifier"],
    )


@pytest.mark.parametrize("option", ["classifier", "esm", "dnabert"])
def test_a_model_outside_the_model_roots_is_refused_naming_it(tmp_path: Path, option: str) -> None:
    allowed, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    models = {**model_files(allowed), option: model_files(elsewhere)[option]}
    config = with_model_roots(tmp_path, allowed)
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_models(model_request(tmp_path, **models), config)
    assert refused.value.code == ErrorCode.FORBIDDEN
    assert models[option] in refused.value.message
    assert f"outside the allowed model roots ({allowed})" in refused.value.message
    assert "model_roots" in refused.value.message


@pytest.mark.parametrize("option", ["classifier", "esm", "dnabert"])
def test_a_symlink_inside_the_model_roots_to_a_model_outside_is_refused(
    tmp_path: Path, option: str
) -> None:
    allowed = tmp_path / "models"
    models = model_files(allowed)
    outside = Path(model_files(tmp_path / "elsewhere")[option])
    link = allowed / f"link-{outside.name}"
    link.symlink_to(outside)
    if option == "esm":  # a name fair-esm accepts, with its regression file beside it
        link = allowed / "esm2_linked.pt"
        link.symlink_to(outside)
        (allowed / "esm2_linked-contact-regression.pt").write_bytes(b"weights")
    config = with_model_roots(tmp_path, allowed)
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_models(model_request(tmp_path, **{**models, option: str(link)}), config)
    assert refused.value.code == ErrorCode.FORBIDDEN
    assert f"resolves to {outside}" in refused.value.message


def test_an_esm_checkpoint_whose_regression_file_lies_outside_is_refused(tmp_path: Path) -> None:
    allowed = tmp_path / "models"
    models = model_files(allowed)
    regression = allowed / "esm2_t2_demo-contact-regression.pt"
    regression.unlink()
    regression.symlink_to(model_files(tmp_path / "elsewhere")["esm"])
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_models(
            model_request(tmp_path, **models), with_model_roots(tmp_path, allowed)
        )
    assert refused.value.code == ErrorCode.FORBIDDEN
    assert str(regression) in refused.value.message


def test_hub_ids_names_and_the_demo_profile_are_not_limited_by_model_roots(
    tmp_path: Path,
) -> None:
    allowed = tmp_path / "models"
    classifier = model_files(allowed)["classifier"]
    config = with_model_roots(tmp_path, allowed)
    hub = model_request(
        tmp_path, classifier=classifier, esm="esm2_t6_8M_UR50D", dnabert="zhihan1996/DNABERT-S"
    )
    assert submission.check_models(hub, config).spec.dnabert == "zhihan1996/DNABERT-S"
    demo = submission.check_models(model_request(tmp_path, profile="demo"), config).spec
    assert not Path(demo.dnabert).is_relative_to(allowed)  # in the state dir's cache


def test_a_dnabert_value_that_is_no_hub_id_counts_as_a_path(tmp_path: Path) -> None:
    allowed = tmp_path / "models"
    models = model_files(allowed)
    config = with_model_roots(tmp_path, allowed)
    for value in ("~/dnabert", "a/b/c"):
        with pytest.raises(submission.SubmitRefused) as refused:
            submission.check_models(model_request(tmp_path, **{**models, "dnabert": value}), config)
        assert refused.value.code == ErrorCode.FORBIDDEN
        assert "outside the allowed model roots" in refused.value.message


def test_without_model_roots_any_model_path_is_allowed(tmp_path: Path) -> None:
    models = model_files(tmp_path / "anywhere")
    spec = submission.check_models(
        model_request(tmp_path, **models), DaemonConfig(state_dir=tmp_path / "state")
    ).spec
    assert spec.classifier == models["classifier"]


# --- the caller's own rights (real users: alice and bob, members of virnucd's group) ----


def as_caller(user: User) -> Caller:
    return Caller(f"uid:{user.uid}", user.uid, user.gid, admin=False, label=user.name)


@pytest.fixture
def homes(unix_users: UnixUsers) -> UnixUsers:
    return unix_users.empty_homes()


def owned(user: User, path: Path, mode: int, text: str | None = ">r1\nACGT\n") -> Path:
    if text is None:
        path.mkdir()
    else:
        path.write_text(text)
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)
    return path


def submit_as(
    user: User, source: Path, out: Path, tmp_path: Path, force: bool = False
) -> CheckedSubmission:
    args = SubmitArgs(input=str(source), output=str(out), profile="demo", force=force)
    config = DaemonConfig(state_dir=tmp_path / "state")
    return submission.check_submission(args, config, set(), as_caller(user))


def test_alice_cannot_submit_bobs_file(homes: UnixUsers, tmp_path: Path) -> None:
    secret = owned(homes.bob, homes.home(homes.bob) / "secret.fa", 0o640)
    with pytest.raises(submission.SubmitRefused) as refused:
        submit_as(homes.alice, secret, homes.home(homes.alice) / "out", tmp_path)
    assert refused.value.code == ErrorCode.FORBIDDEN
    alice = f"{homes.alice.name} (uid {homes.alice.uid})"
    assert refused.value.message == f"input {secret}: {alice} may not read it"
    assert not (homes.home(homes.alice) / "out").exists()  # nothing made for a refusal


def test_alice_submits_her_own_file_and_the_job_records_what_was_opened(
    homes: UnixUsers, tmp_path: Path
) -> None:
    mine = owned(homes.alice, homes.home(homes.alice) / "mine.fa", 0o600)
    out = homes.home(homes.alice) / "out"
    checked = submit_as(homes.alice, mine, out, tmp_path)
    assert checked.input_fingerprint == fingerprint([mine])
    assert checked.output_identity == f"{out.stat().st_dev}:{out.stat().st_ino}"


def test_alice_cannot_write_her_outputs_into_bobs_directory(
    homes: UnixUsers, tmp_path: Path
) -> None:
    mine = owned(homes.alice, homes.home(homes.alice) / "mine.fa", 0o600)
    results = owned(homes.bob, homes.home(homes.bob) / "results", 0o755, None)
    with pytest.raises(submission.SubmitRefused) as refused:
        submit_as(homes.alice, mine, results, tmp_path)
    assert refused.value.code == ErrorCode.FORBIDDEN
    assert refused.value.message.startswith(f"output {results}: {homes.alice.name}")


def test_alice_cannot_replace_bobs_results_with_force(homes: UnixUsers, tmp_path: Path) -> None:
    mine = owned(homes.alice, homes.home(homes.alice) / "mine.fa", 0o600)
    results = owned(homes.bob, homes.home(homes.bob) / "results", 0o755, None)
    his = owned(homes.bob, results / PREDICTIONS, 0o644, "his\n")
    with pytest.raises(submission.SubmitRefused) as refused:
        submit_as(homes.alice, mine, results, tmp_path, force=True)
    assert refused.value.code == ErrorCode.FORBIDDEN
    assert his.read_text() == "his\n"


def test_force_in_a_sticky_shared_directory_cannot_replace_another_users_results(
    homes: UnixUsers, tmp_path: Path
) -> None:
    mine = owned(homes.alice, homes.home(homes.alice) / "mine.fa", 0o600)
    shared = owned(homes.bob, homes.home(homes.bob) / "shared", 0o1777, None)
    owned(homes.bob, shared / PREDICTIONS, 0o644, "his\n")
    with pytest.raises(submission.SubmitRefused) as refused:
        submit_as(homes.alice, mine, shared, tmp_path, force=True)
    assert refused.value.code == ErrorCode.FORBIDDEN
    assert f"would replace {PREDICTIONS}" in refused.value.message


def test_virnucds_own_user_submits_as_before(homes: UnixUsers, tmp_path: Path) -> None:
    """The private daemon of `virnucctl predict`: the caller is virnucd's own user."""
    secret = owned(homes.bob, homes.home(homes.bob) / "secret.fa", 0o600)
    me = Caller(f"uid:{os.geteuid()}", os.geteuid(), os.getegid(), admin=True, label="me")
    args = SubmitArgs(input=str(secret), output=str(tmp_path / "out"), profile="demo")
    config = DaemonConfig(state_dir=tmp_path / "state")
    checked = submission.check_submission(args, config, set(), me)
    assert checked.input_fingerprint == fingerprint([secret])
    assert (tmp_path / "out").is_dir()
