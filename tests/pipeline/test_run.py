"""pipeline/run.py: one whole prediction in this process, inputs to output files."""

from __future__ import annotations

import json
from pathlib import Path

from virnuc.pipeline.inputs import read_job_records
from virnuc.pipeline.output_format import RUN_INFO, VIRUS_FASTA
from virnuc.pipeline.outputs import PREDICTIONS, SUMMARY
from virnuc.pipeline.run import predict_file
from virnuc.pipeline.virus_fasta import fasta_entry

from tests.support.inputs import as_rna

EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"


def test_predict_file_writes_one_summary_row_per_record(demo_models, tmp_path: Path) -> None:
    done = predict_file(demo_models, EXAMPLE, tmp_path)
    assert done.records_done == done.records_total == 20
    summary = (tmp_path / SUMMARY).read_text().splitlines()
    assert [row.split("\t")[0] for row in summary[1:]] == [f"contig_{i:05d}" for i in range(1, 21)]
    assert len((tmp_path / PREDICTIONS).read_text().splitlines()) == done.frames_done + 1


def test_predict_file_records_what_ran_in_run_info_json(demo_models, tmp_path: Path) -> None:
    predict_file(demo_models, EXAMPLE, tmp_path / "out")
    info = json.loads((tmp_path / "out" / RUN_INFO).read_text())
    assert info["inputs"] == [str(EXAMPLE)]
    assert info["output"] == str(tmp_path / "out")
    assert info["demo_models"] is True
    assert info["devices"] == ["cpu"]
    assert info["options"]["save_embeddings"] is False
    classifier = info["models"]["classifier"]
    assert classifier["given"].startswith("demo profile")
    (file,) = classifier["files"]
    assert file["path"].endswith("classifier.pth")
    assert len(file["sha256"]) == 64


def test_an_rna_fasta_gives_byte_for_byte_the_outputs_of_the_same_dna(
    demo_models, tmp_path: Path
) -> None:
    dna = EXAMPLE.read_text()
    rna = as_rna(dna)
    assert {"U", "u"} <= set(rna)  # both cases are exercised
    # one input path for both, so the summary's `source` column is the same
    source = tmp_path / "input.fasta"
    outputs = {}
    for name, text in (("dna", dna), ("rna", rna)):
        source.write_text(text)
        predict_file(demo_models, source, tmp_path / name)
        outputs[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())}

    assert outputs["rna"].keys() == outputs["dna"].keys()
    assert {PREDICTIONS, SUMMARY} <= outputs["dna"].keys()
    for name, data in outputs["dna"].items():
        if name != RUN_INFO:  # it records the run's output dir, date and time
            assert outputs["rna"][name] == data, name


def test_a_record_mostly_of_n_is_warned_about(demo_models, tmp_path: Path) -> None:
    fasta = tmp_path / "in.fa"
    fasta.write_text(">gappy\n" + "N" * 200 + "ATGGCC" * 30 + "\n>clean\n" + "ATGGCC" * 60 + "\n")
    predict_file(demo_models, fasta, tmp_path / "out")
    rows = (tmp_path / "out" / SUMMARY).read_text().splitlines()[1:]
    warnings = {row.split("\t")[0]: row.split("\t")[-1] for row in rows}
    assert warnings == {"gappy": "mostly_N", "clean": ""}  # 200 of 380 bases are N


def test_virus_fna_holds_the_virus_calls_with_their_sequences(demo_models, tmp_path: Path) -> None:
    predict_file(demo_models, EXAMPLE, tmp_path / "out")
    rows = [row.split("\t") for row in (tmp_path / "out" / SUMMARY).read_text().splitlines()[1:]]
    viruses = [row[0] for row in rows if row[6] == "virus"]
    assert viruses  # the demo models call some of the example's records virus
    sequences = {record.id: record.sequence for _, record in read_job_records([str(EXAMPLE)])}
    expected = "".join(fasta_entry(rid, sequences[rid]) for rid in viruses)
    assert (tmp_path / "out" / VIRUS_FASTA).read_text() == expected
