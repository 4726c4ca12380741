"""The output files' names, headers and class labels: the one owner of each.

The writer (`outputs.py`), the classifier, the report and virnucd all take them from
here. This module imports nothing, so virnucd and `virnucctl report` can name the
outputs without importing torch or h5py.
"""

from __future__ import annotations

LABELS = ("others", "virus")  # the classifier's class 0, class 1
NO_FRAMES = "no_frames"  # the call of a record without a scored frame

PREDICTIONS = "prediction_results.txt"
HIGHEST_SCORE = "prediction_results_highestscore.csv"
SUMMARY = "sequence_summary.tsv"
EMBEDDINGS = "embeddings.h5"
VIRUS_FASTA = "virus.fna"  # the records called virus (pipeline/virus_fasta.py)
OUTPUT_NAMES = (PREDICTIONS, HIGHEST_SCORE, SUMMARY, EMBEDDINGS, VIRUS_FASTA)
# What ran and how (pipeline/run_info.py): written after the outputs, not part of their set.
RUN_INFO = "run_info.json"

PREDICTIONS_HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"
HIGHEST_SCORE_HEADER = "Modified_ID\tIs_Virus\n"
SUMMARY_HEADER = (
    "record_id\tlength\tchunks\tframes_scored\tchunks_virus\tmax_virus_score\tcall\tsource"
    "\twarnings\n"
)
# Written before the `warnings` column, and before `source` too: `virnucctl report`
# still reads both.
SUMMARY_HEADER_V2 = SUMMARY_HEADER.replace("\twarnings", "")
SUMMARY_HEADER_V1 = SUMMARY_HEADER_V2.replace("\tsource", "")
