"""``virnucctl predict --device auto``: the GPU when torch sees one, else the CPU, said on
stderr; any other --device is passed on untouched.

torch is stood in for by a module whose ``cuda.is_available`` says what the test needs:
the client tests stay torch-free (tests/conftest.py), and choose_device imports torch
when called, so it finds the stand-in.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from virnuc.client import cli, commands
from virnuc.client.device import choose_device


def torch_sees_a_gpu(monkeypatch: pytest.MonkeyPatch, gpu: bool) -> None:
    torch = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: gpu))
    monkeypatch.setitem(sys.modules, "torch", torch)


@pytest.mark.parametrize(("gpu", "chosen"), [(True, "cuda"), (False, "cpu")])
def test_auto_chooses_the_gpu_when_torch_sees_one_else_the_cpu_and_says_so(
    gpu: bool, chosen: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    torch_sees_a_gpu(monkeypatch, gpu)
    assert choose_device("auto") == chosen
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1
    assert said[0].startswith(f"virnucctl: device {chosen} (--device auto:")


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1"])
def test_a_device_named_is_used_as_is_without_a_word(
    device: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    torch_sees_a_gpu(monkeypatch, True)
    assert choose_device(device) == device
    assert capsys.readouterr().err == ""


def test_predict_defaults_to_auto_and_starts_its_daemon_on_the_device_chosen(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.build_parser().parse_args(["predict", "in.fa", "--out", "out"])
    assert args.device == "auto"
    torch_sees_a_gpu(monkeypatch, True)
    started: list[str] = []

    class Started(Exception):
        pass

    def private_daemon(device: str, *rest: object) -> None:
        started.append(device)
        raise Started

    monkeypatch.setattr(commands, "PrivateDaemon", private_daemon)
    with pytest.raises(Started):
        commands.predict(args)
    assert started == ["cuda"]
    assert "virnucctl: device cuda" in capsys.readouterr().err


def test_auto_chooses_the_cpu_when_torch_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert choose_device("auto") == "cpu"
    assert "virnucctl: device cpu" in capsys.readouterr().err
