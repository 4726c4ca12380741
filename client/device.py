"""``virnucctl predict --device auto``: the GPU when torch sees one, else the CPU.

A prediction with ESM-2 3B takes hours on a CPU and minutes on a GPU, so the default
looks for a GPU, and says on stderr which device it chose. torch is imported only
here, when ``predict`` asks: every other command, and virnucctl's import, stay
torch-free (tests/daemon/test_main.py holds it to that).
"""

from __future__ import annotations

import sys

AUTO_DEVICE = "auto"


def choose_device(requested: str) -> str:
    """``requested`` as given, unless it is ``auto``: then ``cuda`` (the first GPU) when
    torch sees a GPU, else ``cpu``, and one line on stderr saying which and why."""
    if requested != AUTO_DEVICE:
        return requested
    if _torch_sees_a_gpu():
        print(
            "virnucctl: device cuda (--device auto: torch sees a GPU; --device cpu runs "
            "on the CPU)",
            file=sys.stderr,
        )
        return "cuda"
    print(
        "virnucctl: device cpu (--device auto: torch sees no GPU; with ESM-2 3B a CPU "
        "takes hours where a GPU takes minutes)",
        file=sys.stderr,
    )
    return "cpu"


def _torch_sees_a_gpu() -> bool:
    """False too when torch or its CUDA libraries cannot be loaded: the CPU still works."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except (ImportError, OSError, RuntimeError):
        return False
