"""What `check_submission` refuses before a job exists, in process: each refusal's code
and a message naming the file (tests/e2e/test_bad_input.py sends them through virnucd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.jobs import submission
from virnuc.protocol import ErrorCode, SubmitArgs


def valid_fasta(path: Path) -> Path:
    path.write_text(">r1\nACGTACGTAC\n")
    return path


def test_a_missing_input_is_refused_naming_it(tmp_path: Path) -> None:
    gone = tmp_path / "absent.fa"
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_input(gone)
    assert refused.value.code == ErrorCode.INVALID_INPUT
    assert f"input {gone}: no such file" in refused.value.message


def test_unreadable_input_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """At unit level: tests run as root, and root reads a file whatever its mode, so
    a real unreadable file cannot be made here. `check_input` asks `os.access`."""
    fasta = valid_fasta(tmp_path / "secret.fa")
    real_access = submission.os.access

    def access(path: object, mode: int) -> bool:
        return False if Path(str(path)) == fasta else real_access(path, mode)

    monkeypatch.setattr(submission.os, "access", access)
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_input(fasta)
    assert refused.value.code == ErrorCode.INVALID_INPUT
    assert str(fasta) in refused.value.message
    assert "permission denied" in refused.value.message
    assert "make it readable" in refused.value.message


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
    spec = submission.check_models(model_request(tmp_path, **models), config)
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
    assert submission.check_models(hub, config).dnabert == "zhihan1996/DNABERT-S"
    demo = submission.check_models(model_request(tmp_path, profile="demo"), config)
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
    )
    assert spec.classifier == models["classifier"]
