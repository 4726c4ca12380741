"""Whether this CPU computes bf16 in hardware, and how we can tell.

oneDNN, which runs torch's CPU matrix products, multiplies bf16 natively on CPUs with
AMX tiles (Intel Xeon since Sapphire Rapids: ``amx_bf16``) or AVX-512 BF16 dot products
(Xeon since Cooper Lake, AMD EPYC since Zen 4: ``avx512_bf16``). Elsewhere bf16 is
emulated, converted to fp32 around every product, and slower than fp32. Two witnesses:
torch's own probes (``torch.cpu._is_amx_tile_supported`` and
``_is_avx512_bf16_supported``, private, so only used when present) and the kernel's
``/proc/cpuinfo`` flags; ``torch.backends.cpu.get_cpu_capability()`` names the vector
level torch's own kernels were dispatched to (it has no bf16 level of its own).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")


@dataclass(frozen=True)
class Bf16Support:
    model: str  # the CPU's model name, or "unknown"
    flags: tuple[str, ...]  # the bf16 flags of /proc/cpuinfo present
    torch_amx: bool | None  # torch's probe; None: this torch has none
    torch_avx512_bf16: bool | None
    capability: str  # torch.backends.cpu.get_cpu_capability()

    @property
    def native(self) -> bool:
        """bf16 matrix products in hardware, by either witness."""
        return bool(self.torch_amx or self.torch_avx512_bf16) or bool(
            {"amx_bf16", "avx512_bf16"} & set(self.flags)
        )

    def describe(self) -> str:
        witnesses = (
            f"/proc/cpuinfo flags: {', '.join(self.flags) or 'none of ' + ', '.join(_FLAGS)}"
        )
        probes = (
            f"torch probes: AMX {_yes(self.torch_amx)}, AVX512-BF16 {_yes(self.torch_avx512_bf16)}"
        )
        verdict = (
            "bf16 matrix products in hardware"
            if self.native
            else "NO bf16 hardware: bf16 is emulated here and slower than fp32"
        )
        return f"{self.model}; {verdict} ({witnesses}; {probes}; torch dispatch {self.capability})"

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "flags": list(self.flags), "native": self.native}


def _yes(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _probe(name: str) -> bool | None:
    probe = getattr(torch.cpu, name, None)
    return None if probe is None else bool(probe())


def cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """The first CPU's model name and flags ("unknown", none where unreadable)."""
    model, flags = "unknown", set()
    try:
        text = path.read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def bf16_support(path: Path = Path("/proc/cpuinfo")) -> Bf16Support:
    model, flags = cpuinfo(path)
    return Bf16Support(
        model=model,
        flags=tuple(f for f in _FLAGS if f in flags),
        torch_amx=_probe("_is_amx_tile_supported"),
        torch_avx512_bf16=_probe("_is_avx512_bf16_supported"),
        capability=torch.backends.cpu.get_cpu_capability(),
    )


def onednn_bf16_kernel() -> str | None:
    """The oneDNN implementation a small bf16 linear layer runs in, e.g.
    ``brg_matmul:avx512_core_bf16`` or ``brg_matmul:avx512_core_amx``; None when oneDNN
    ran none (torch took another path: bf16 without oneDNN is emulated).

    oneDNN's verbose mode names each primitive it executes, on the process's stdout
    (C stdio, not Python's): that file descriptor is pointed at a file meanwhile.
    """
    x, w = torch.ones(64, 256, dtype=torch.bfloat16), torch.ones(512, 256, dtype=torch.bfloat16)
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as capture:
        os.dup2(capture.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                torch.nn.functional.linear(x, w)
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        lines = capture.read().splitlines()
    for line in lines:
        fields = line.split(",")
        # onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,...
        if "exec" in fields and "cpu" in fields[:-2]:
            at = fields.index("cpu")
            if fields[at + 1] in ("matmul", "inner_product"):
                return fields[at + 2]
    return None
