"""`[models.NAME]` tables: what a set may hold, every refusal naming its table, and the
TOML handed to `virnucctl predict`'s private virnucd reading back the same."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from virnuc.model_sets import (
    ModelSetConfig,
    ModelSetError,
    model_sets_toml,
    parse_model_set,
    parse_model_sets,
)


def test_a_set_of_files_and_a_profile_set_are_read_as_written() -> None:
    sets = parse_model_sets(
        {
            "default": {
                "classifier": "/models/300_model.pth",
                "esm": "/models/esm2_t36_3B_UR50D.pt",
                "dnabert": "/models/DNABERT-S",
                "chunk_length": 300,
                "precision": "bf16",
            },
            "demo": {"profile": "demo"},
        }
    )
    assert sets["default"] == ModelSetConfig(
        "default",
        classifier="/models/300_model.pth",
        esm="/models/esm2_t36_3B_UR50D.pt",
        dnabert="/models/DNABERT-S",
        chunk_length=300,
        precision="bf16",
    )
    assert sets["demo"] == ModelSetConfig("demo", profile="demo")


def test_names_and_hub_ids_stay_as_they_are_and_a_home_path_is_expanded() -> None:
    model_set = parse_model_set(
        "hub",
        {"classifier": "~/300_model.pth", "esm": "esm2_t6_8M_UR50D", "dnabert": "org/DNABERT-S"},
    )
    assert model_set.classifier == str(Path.home() / "300_model.pth")
    assert (model_set.esm, model_set.dnabert) == ("esm2_t6_8M_UR50D", "org/DNABERT-S")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"classifier": "/m.pth", "weights": "x"}, r"\[models.s\]: unknown keys weights"),
        ({"profile": "demo", "classifier": "/m.pth"}, r"\[models.s\]: profile = 'demo' brings"),
        ({"esm": "esm2_t6_8M_UR50D"}, r"\[models.s\] names no classifier"),
        ({"classifier": "/m.pth", "chunk_length": 400}, r"\[models.s\]: chunk_length must be"),
        ({"classifier": "/m.pth", "chunk_length": True}, r"\[models.s\]: chunk_length must be"),
        ({"classifier": "/m.pth", "precision": "fp16"}, r"\[models.s\]: precision must be one"),
        ({"profile": "tiny"}, r"\[models.s\]: unknown profile 'tiny'"),
        ({"classifier": "models/300_model.pth"}, r"\[models.s\]: classifier must be an absolute"),
        ({"classifier": "/m.pth", "esm": "esm2.pt"}, r"\[models.s\]: esm must be an absolute"),
        ({"classifier": "/m.pth", "dnabert": "./dnabert"}, r"\[models.s\]: dnabert must be an"),
        ({"classifier": 3}, r"\[models.s\]: classifier must be a non-empty string"),
        ("demo", r"\[models.s\] must be a table"),
    ],
)
def test_a_bad_table_is_refused_naming_it(table: object, message: str) -> None:
    with pytest.raises(ModelSetError, match=message):
        parse_model_sets({"s": table})


def test_a_set_name_that_is_no_plain_word_is_refused() -> None:
    with pytest.raises(ModelSetError, match=r"\[models.a b\]: a set's name is letters"):
        parse_model_sets({"a b": {"profile": "demo"}})


def test_models_that_is_not_a_table_of_tables_is_refused() -> None:
    with pytest.raises(ModelSetError, match="models must be tables"):
        parse_model_sets("default")


def test_the_toml_for_the_private_virnucd_reads_back_the_same_sets() -> None:
    sets = parse_model_sets(
        {
            "default": {"classifier": '/odd "dir"\\\x7f\t/300_model.pth', "precision": "tf32"},
            "v2.big-1": {"classifier": "/models/ünï/500_model.pth", "chunk_length": 500},
            "demo": {"profile": "demo"},
        }
    )
    text = model_sets_toml(sets)
    assert parse_model_sets(tomllib.loads(text)["models"]) == sets


def test_describe_names_the_set_and_its_models_briefly() -> None:
    model_set = ModelSetConfig("default", classifier="/m/300_model.pth", esm="esm2_t36_3B_UR50D")
    assert model_set.describe() == "default (300_model.pth, esm2_t36_3B_UR50D)"
    assert ModelSetConfig("demo", profile="demo").describe() == "demo (profile demo)"
