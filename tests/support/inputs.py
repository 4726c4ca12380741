"""Input files for the pipeline's tests: a FASTQ that only its line layout tells apart,
written plain or gzipped, and a FASTA's sequences in RNA letters."""

import gzip
from pathlib import Path

# Quality lines that begin with '@' and '+' (legal Phred+33 characters): only the line
# layout tells them from headers and '+' lines. A blank line between two records.
FASTQ = (
    b"@r1 first read\nACGTACGTAA\n+\n@IIIIIIIII\n"
    b"@r2\nacgtn\n+r2\n+++++\n"
    b"\n"
    b"@r3 x\nGGGCCCAAATTT\n+\nIIIIIIIIIIII\n"
)


def write(tmp_path: Path, data: bytes, name: str = "reads.fq") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def as_rna(fasta: str) -> str:
    """`fasta` with the sequences' T and t written as U and u; headers are kept."""
    return "".join(
        line if line.startswith(">") else line.replace("T", "U").replace("t", "u")
        for line in fasta.splitlines(keepends=True)
    )
