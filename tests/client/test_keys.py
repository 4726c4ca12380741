"""client/keys.py: the CURVE key pair `virnucctl keys generate` writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from zmq.auth import load_certificate

from virnuc.client.cli import main as virnucctl

from tests.support.file_modes import mode


def test_keys_generate_writes_a_pair_with_a_private_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert virnucctl(["keys", "generate", "--dir", str(keys)]) == 0
    public, secret = keys / "client.key", keys / "client.key_secret"
    assert mode(secret) == 0o600
    assert mode(keys) == 0o700
    assert load_certificate(public) == (load_certificate(secret)[0], None)
    out = capsys.readouterr().out
    assert str(public) in out
    assert "curve_allow_dir" in out
    before = secret.read_bytes()
    assert virnucctl(["keys", "generate", "--dir", str(keys)]) != 0  # never overwrites
    assert "already exist" in capsys.readouterr().err
    assert secret.read_bytes() == before
