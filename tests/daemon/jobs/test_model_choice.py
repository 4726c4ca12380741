"""Which models a submit gets (daemon/jobs/model_choice.py, through `check_models`): the
set it names, the `default` set when it names no model, or the models it names itself;
a set's paths are the admin's, the submit's own stay under `model_roots`."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.jobs import submission
from virnuc.model_sets import parse_model_sets
from virnuc.protocol import ErrorCode, SubmitArgs

from tests.daemon.jobs.test_submission import model_files


def request(tmp_path: Path, **models: str | None) -> SubmitArgs:
    return SubmitArgs(input=str(tmp_path / "in.fa"), output=str(tmp_path / "out"), **models)


def server(tmp_path: Path, sets: dict[str, object], **settings: object) -> DaemonConfig:
    """A virnucd config with these `[models.NAME]` tables; model files only under
    tmp/allowed may be named by a submit."""
    return DaemonConfig(
        state_dir=tmp_path / "state",
        models=parse_model_sets(sets),
        model_roots=(str(tmp_path / "allowed"),),
        **settings,  # type: ignore[arg-type]
    )


def refusal(args: SubmitArgs, config: DaemonConfig) -> submission.SubmitRefused:
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_models(args, config)
    return refused.value


def test_a_submit_naming_no_model_gets_the_default_set(tmp_path: Path) -> None:
    files = model_files(tmp_path / "admin")  # outside model_roots: the admin's own
    config = server(tmp_path, {"default": files})
    choice = submission.check_models(request(tmp_path), config)
    assert choice.model_set is not None
    assert choice.model_set.name == "default"
    assert (choice.spec.classifier, choice.spec.esm) == (files["classifier"], files["esm"])


def test_a_submit_naming_a_set_gets_that_set(tmp_path: Path) -> None:
    config = server(tmp_path, {"default": model_files(tmp_path / "a"), "demo": {"profile": "demo"}})
    choice = submission.check_models(request(tmp_path, models="demo"), config)
    assert choice.model_set is not None
    assert choice.model_set.name == "demo"
    assert choice.spec.profile == "demo"


def test_an_unknown_set_is_refused_listing_the_sets_there_are(tmp_path: Path) -> None:
    config = server(tmp_path, {"default": {"profile": "demo"}, "big": {"profile": "demo"}})
    refused = refusal(request(tmp_path, models="huge"), config)
    assert refused.code == ErrorCode.INVALID_INPUT
    assert "no model set 'huge'" in refused.message
    assert "default (profile demo), big (profile demo)" in refused.message


def test_without_sets_or_model_options_the_refusal_says_how_to_name_models(
    tmp_path: Path,
) -> None:
    refused = refusal(request(tmp_path), server(tmp_path, {}))
    assert refused.code == ErrorCode.INVALID_INPUT
    assert "--classifier" in refused.message
    assert "[models.default]" in refused.message
    named = refusal(request(tmp_path, models="default"), server(tmp_path, {}))
    assert "this virnucd has none" in named.message


def test_without_a_default_set_the_refusal_offers_the_other_sets(tmp_path: Path) -> None:
    refused = refusal(request(tmp_path), server(tmp_path, {"big": {"profile": "demo"}}))
    assert "--models NAME (big (profile demo))" in refused.message


def test_model_options_of_a_submit_still_choose_and_stay_under_model_roots(
    tmp_path: Path,
) -> None:
    config = server(tmp_path, {"default": {"profile": "demo"}})
    own = model_files(tmp_path / "allowed")
    choice = submission.check_models(request(tmp_path, **own), config)
    assert choice.model_set is None
    assert choice.spec.classifier == own["classifier"]
    outside = model_files(tmp_path / "elsewhere")
    refused = refusal(request(tmp_path, classifier=outside["classifier"]), config)
    assert refused.code == ErrorCode.FORBIDDEN


def test_a_set_whose_file_is_gone_is_refused_naming_the_set(tmp_path: Path) -> None:
    files = model_files(tmp_path / "admin")
    Path(files["classifier"]).unlink()
    refused = refusal(request(tmp_path), server(tmp_path, {"default": files}))
    assert refused.code == ErrorCode.INVALID_INPUT
    assert "model set 'default' of virnucd's config" in refused.message
    assert files["classifier"] in refused.message


def test_precision_comes_from_the_submit_else_the_set_else_the_daemon(tmp_path: Path) -> None:
    sets = {"default": {"profile": "demo", "precision": "tf32"}, "plain": {"profile": "demo"}}
    config = server(tmp_path, sets, precision="bf16")
    spec_of = lambda **args: submission.check_models(request(tmp_path, **args), config).spec  # noqa: E731
    assert spec_of().precision == "tf32"
    assert spec_of(precision="fp32").precision == "fp32"
    assert spec_of(models="plain").precision == "bf16"
