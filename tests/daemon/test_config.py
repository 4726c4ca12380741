"""virnucd's settings: a TOML file, overrides, and the checks that refuse bad values."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from virnuc.daemon.config import ConfigError, load_config


def load(tmp_path: Path, text: str, **overrides: object):
    path = tmp_path / "virnucd.toml"
    path.write_text(text)
    return load_config(path, {"state_dir": str(tmp_path / "state"), **overrides})


def test_precision_defaults_to_fp32_and_an_override_wins_over_the_file(tmp_path: Path) -> None:
    assert load(tmp_path, "").default_precision == "fp32"
    assert load(tmp_path, 'precision = "tf32"\n').default_precision == "tf32"
    assert load(tmp_path, 'precision = "tf32"\n', precision="bf16").default_precision == "bf16"


def test_the_deprecated_half_precision_means_bf16_unless_precision_is_set(tmp_path: Path) -> None:
    assert load(tmp_path, "half_precision = true\n").default_precision == "bf16"
    both = 'half_precision = true\nprecision = "tf32"\n'
    assert load(tmp_path, both).default_precision == "tf32"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('precision = "fp16"\n', "precision must be one of fp32, tf32, bf16, not 'fp16'"),
        ("state_min_free_mb = -1\n", "state_min_free_mb must be 0 or more"),
        ("max_jobs_per_owner = -1\n", "max_jobs_per_owner must be 0 or more"),
        ("frame_cache_mb = -1\n", "frame_cache_mb must be 0 or more"),
        ("space_retry = 0\n", "space_retry must be above 0"),
        ("space_retry = 90\n", "at most space_retry_max"),
        ("retention_days = -1\n", "retention_days must be 0"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


def test_finished_jobs_are_kept_30_days_by_default_and_0_keeps_them_for_ever(
    tmp_path: Path,
) -> None:
    assert load(tmp_path, "").retention_days == 30
    assert load(tmp_path, "retention_days = 0\n").retention_days == 0


def test_max_jobs_per_owner_defaults_to_no_limit(tmp_path: Path) -> None:
    assert load(tmp_path, "").max_jobs_per_owner == 0
    assert load(tmp_path, "max_jobs_per_owner = 5\n").max_jobs_per_owner == 5


def test_model_roots_default_to_no_limit_and_are_resolved(tmp_path: Path) -> None:
    assert load(tmp_path, "").model_roots == ("/",)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    config = load(tmp_path, f'model_roots = ["{tmp_path / "link"}"]\n')
    assert config.model_roots == (str(tmp_path / "real"),)


def test_the_shared_daemon_example_limits_model_roots() -> None:
    example = Path(__file__).parents[2] / "systemd" / "virnucd.toml"
    roots = tomllib.loads(example.read_text())["model_roots"]
    assert roots
    assert "/" not in roots


def test_curve_users_map_key_names_to_existing_users(tmp_path: Path) -> None:
    config = load(tmp_path, '[curve_users]\nlaptop = "root"\n', admin_group="root")
    assert config.curve_users == {"laptop": "root"}
    assert config.admin_group_id == 0
    assert config.admin_keys_dir == tmp_path / "state" / "curve" / "admins"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[curve_users]\nlaptop = "no-such-user-vn"\n', "'no-such-user-vn', who is not a user"),
        ("[curve_users]\nlaptop = 7\n", 'write NAME = "unixuser"'),
        ('curve_users = "root"\n', "curve_users must be a table"),
        ('admin_group = "no-such-group-vn"\n', "admin_group 'no-such-group-vn' does not exist"),
    ],
)
def test_bad_access_settings_are_refused_at_load(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(tmp_path, text)


def test_model_sets_are_read_from_models_tables(tmp_path: Path) -> None:
    text = '[models.default]\nprofile = "demo"\n\n[models.big]\nclassifier = "/m/500_model.pth"\n'
    sets = load(tmp_path, text).models
    assert sorted(sets) == ["big", "default"]
    assert sets["default"].profile == "demo"
    assert sets["big"].classifier == "/m/500_model.pth"
    assert load(tmp_path, "").models == {}


def test_a_bad_model_set_stops_virnucd_at_start_naming_its_table(tmp_path: Path) -> None:
    text = '[models.fast]\nclassifier = "/m/300_model.pth"\nprecision = "fp8"\n'
    with pytest.raises(ConfigError, match=r"\[models.fast\]: precision must be one of"):
        load(tmp_path, text)


def test_the_shared_daemon_example_has_a_default_model_set_of_local_files() -> None:
    """Under the unit's HF_HUB_OFFLINE=1 every model must be a local file: the example's
    default set names all three, so a submit that names no model works offline."""
    from virnuc.model_sets import parse_model_sets

    example = Path(__file__).parents[2] / "systemd" / "virnucd.toml"
    default = parse_model_sets(tomllib.loads(example.read_text())["models"])["default"]
    assert default.classifier is not None
    for path in (default.classifier, default.esm, default.dnabert):
        assert path is not None
        assert path.startswith("/opt/virnuc/models/")


def test_cpu_workers_share_the_cores_virnucd_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from virnuc.daemon import config as config_module

    monkeypatch.setattr(config_module, "usable_cpus", lambda: 8)  # e.g. a cgroup quota of 8
    assert load(tmp_path, "workers = 2\n").threads_per_cpu_worker() == 4
    assert load(tmp_path, "workers = 3\n").threads_per_cpu_worker() == 2
    monkeypatch.setattr(config_module, "usable_cpus", lambda: 1)
    assert load(tmp_path, "workers = 2\n").threads_per_cpu_worker() == 1
