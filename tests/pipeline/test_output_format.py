"""pipeline/output_format.py: the output files' names and headers, importable without
torch or h5py (virnucd and `virnucctl report` name the outputs through it)."""

from __future__ import annotations

import subprocess
import sys

from virnuc.pipeline.output_format import (
    OUTPUT_NAMES,
    SUMMARY_HEADER,
    SUMMARY_HEADER_V1,
    SUMMARY_HEADER_V2,
)


def test_naming_the_outputs_imports_neither_torch_nor_h5py() -> None:
    code = (
        "import sys, virnuc.pipeline.output_format; "
        "print(sorted(m for m in ('torch', 'h5py') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_names_are_distinct_and_the_old_summary_headers_lack_only_the_last_columns() -> None:
    assert len(set(OUTPUT_NAMES)) == len(OUTPUT_NAMES) == 5
    columns = SUMMARY_HEADER.rstrip("\n").split("\t")
    assert columns[-2:] == ["source", "warnings"]
    assert SUMMARY_HEADER_V2.rstrip("\n").split("\t") == columns[:-1]
    assert SUMMARY_HEADER_V1.rstrip("\n").split("\t") == columns[:-2]
