"""Input files for the pipeline's tests: a FASTQ that only its line layout tells apart,
written plain or gzipped."""

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
