"""The lake's table schemas and quarantine reasons, declared once for writers and readers alike."""
from __future__ import annotations

from pyspark.sql import types as T

# Why a source file is in quarantine. The set is closed: every rejected file gets exactly one of these.
QUARANTINE_REASONS = {
    "empty_file": "zero-byte file",
    "file_too_large": "file larger than ingest.limits.max_file_bytes; not read",
    "unreadable": "the file or archive could not be read (I/O error, corrupt archive)",
    "not_an_image": "no supported image codec recognises the bytes",
    "unsupported_format": "an image format outside ingest.source.extensions' codecs (e.g. ICO, PSD)",
    "truncated": "the image data ends early",
    "corrupt": "the codec recognised the format but failed to decode the pixels",
    "too_many_pixels": "width x height above ingest.limits.max_pixels (decompression-bomb guard)",
    "unsupported_mode": "a pixel mode with no defined conversion to L/RGB (e.g. 32-bit float)",
    "no_label": "no label could be derived (folder, regex or manifest)",
    "missing_file": "listed in the manifest but absent from the file system",
    "duplicate": "same normalised pixels as an image already in the lake or earlier in this run",
}

# Columns of the `images` table (and, plus lineage, of `synthetic`). The tables are partitioned by `split`; `run_id`
# names the run that wrote a row.
IMAGE_FIELDS = [
    T.StructField("id", T.StringType(), False),  # sha256 of the normalised pixels (content hash)
    T.StructField("label", T.IntegerType(), False),
    T.StructField("label_name", T.StringType(), False),
    T.StructField("height", T.IntegerType(), False),
    T.StructField("width", T.IntegerType(), False),
    T.StructField("channels", T.IntegerType(), False),
    T.StructField("image", T.BinaryType(), False),  # the normalised image in the dataset's codec (PNG or JPEG)
    T.StructField("source_path", T.StringType(), False),
    T.StructField("source_sha256", T.StringType(), False),
    T.StructField("ingested_at", T.TimestampType(), False),
]
PARTITION_FIELDS = [T.StructField("split", T.StringType(), False), T.StructField("run_id", T.StringType(), False)]
IMAGES_SCHEMA = T.StructType(IMAGE_FIELDS + PARTITION_FIELDS)

# The `synthetic` table: the `images` columns plus where each generated image came from.
LINEAGE_FIELDS = [
    T.StructField("source_model", T.StringType(), False),          # registered model name
    T.StructField("source_model_version", T.StringType(), False),
    T.StructField("generation_run_id", T.StringType(), False),     # the MLflow run of the generation job
]
SYNTHETIC_SCHEMA = T.StructType(IMAGE_FIELDS + LINEAGE_FIELDS + PARTITION_FIELDS)

# The `predictions` table written by the batch scoring job, partitioned by scored_date; `slice_id` names the (table,
# classifier version, detector version) a row scores, which a re-score replaces.
PREDICTION_FIELDS = [
    T.StructField("id", T.StringType(), False),
    T.StructField("source_path", T.StringType(), False),
    T.StructField("split", T.StringType(), True),
    T.StructField("label", T.IntegerType(), True),             # the known label, when the input has one
    T.StructField("predicted_label", T.IntegerType(), True),
    T.StructField("label_name", T.StringType(), True),         # of the predicted label
    T.StructField("confidence", T.DoubleType(), True),
    T.StructField("top_k_labels", T.ArrayType(T.IntegerType()), True),
    T.StructField("top_k_probabilities", T.ArrayType(T.DoubleType()), True),
    T.StructField("anomaly_score", T.DoubleType(), True),
    T.StructField("is_anomaly", T.BooleanType(), True),
    T.StructField("threshold", T.DoubleType(), False),
    T.StructField("classifier_model", T.StringType(), False),
    T.StructField("classifier_version", T.StringType(), False),
    T.StructField("anomaly_model", T.StringType(), False),
    T.StructField("anomaly_version", T.StringType(), False),
    T.StructField("scoring_run_id", T.StringType(), False),    # the MLflow run of the scoring job
    T.StructField("scored_at", T.TimestampType(), False),
]
PREDICTIONS_SCHEMA = T.StructType(PREDICTION_FIELDS + [T.StructField("scored_date", T.StringType(), False),
                                                       T.StructField("slice_id", T.StringType(), False),
                                                       T.StructField("run_id", T.StringType(), False)])

QUARANTINE_FIELDS = [
    T.StructField("source_path", T.StringType(), False),
    T.StructField("reason", T.StringType(), False),
    T.StructField("detail", T.StringType(), True),
    T.StructField("source_sha256", T.StringType(), True),
    T.StructField("quarantined_at", T.TimestampType(), False),
]
QUARANTINE_SCHEMA = T.StructType(QUARANTINE_FIELDS + [T.StructField("run_id", T.StringType(), False)])

# What the decode stage emits per source file: an accepted image (reason null) or a rejection (reason set).
DECODED_SCHEMA = T.StructType([
    T.StructField("source_path", T.StringType(), False),
    T.StructField("source_sha256", T.StringType(), True),
    T.StructField("reason", T.StringType(), True),
    T.StructField("detail", T.StringType(), True),
    T.StructField("id", T.StringType(), True),
    T.StructField("label", T.IntegerType(), True),
    T.StructField("label_name", T.StringType(), True),
    T.StructField("split", T.StringType(), True),
    T.StructField("height", T.IntegerType(), True),
    T.StructField("width", T.IntegerType(), True),
    T.StructField("channels", T.IntegerType(), True),
    T.StructField("image", T.BinaryType(), True),
])

# Raw records entering the decode stage: a file's bytes plus hints from a manifest (may be null).
RAW_SCHEMA = T.StructType([
    T.StructField("source_path", T.StringType(), False),
    T.StructField("content", T.BinaryType(), True),
    T.StructField("length", T.LongType(), False),
    T.StructField("label_hint", T.StringType(), True),
    T.StructField("split_hint", T.StringType(), True),
    T.StructField("error", T.StringType(), True),  # a rejection decided before decoding, as "reason: detail"
])
