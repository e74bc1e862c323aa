"""`labels.json`: the labels of an analysis's features (or of its neurons, in `neurons/labels.json`),
written by `interp label` and read by one reader for search, reports, neurons and exports.

    {"format": "monosemantic-labels", "format_version": 1, "labeller": "rules", "config": {...},
     "analysis": "<fingerprint of the analysis labelled>",
     "features": [{"id": int, "label": str, "score": float | null, ...}, ...]}

"features" may also be an object keyed by the id as a string (labels written by other tools). The
reader refuses a file whose "analysis" differs from the fingerprint in the folder's analysis.json
(labels of another analysis); a file without the field (written by hand or by other tools) is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from interp.features.analysis.artifact import LABELS_FILE, read_fingerprint
from sae.files import read_json, write_json

LABELS_FORMAT = "monosemantic-labels"
LABELS_FORMAT_VERSION = 1


def save_labels(
    records: list[dict[str, Any]],
    folder: str | os.PathLike,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `labels.json` (one record per feature, `Label.to_dict()`) into the analysis folder, atomically."""
    return write_json(
        Path(folder) / LABELS_FILE,
        {
            "format": LABELS_FORMAT,
            "format_version": LABELS_FORMAT_VERSION,
            "labeller": "rules",
            "config": config,
            "split": "held out: sequences whose hash_keys(index) is odd",
            "analysis": read_fingerprint(folder),
            **(extra or {}),
            "features": records,
        },
        indent=None,
    )


def read_labels(folder: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """Feature id -> its label record ({"label": str, "score": float | None, ...}) from `labels.json`
    in `folder`; {} when there is none. ValueError naming the file and the fix for a malformed one."""
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        return {}
    fix = f"re-run `interp label --analysis {Path(folder)}`"
    body = read_json(path, fix=fix)
    labelled, current = body.get("analysis"), read_fingerprint(folder)
    if labelled is not None and labelled != current:
        raise ValueError(
            f"{path} labels another analysis (fingerprint {labelled}) than the one in {Path(folder)} ({current}): "
            f"the folder was re-analysed after labelling; {fix}."
        )
    features = body.get("features")
    if isinstance(features, dict):
        items = [{"id": int(k), **v} if isinstance(v, dict) and k.isdigit() else v for k, v in features.items()]
    elif isinstance(features, list):
        items = features
    else:
        raise ValueError(
            f"{path}: field 'features' must be a list of {{id, label, score}} records or an object keyed by id; {fix}."
        )
    labels = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int) or not isinstance(item.get("label"), str):
            raise ValueError(
                f"{path}: every entry of field 'features' needs an integer 'id' and a string 'label'; "
                f"found {item!r:.80}; {fix}."
            )
        labels[item["id"]] = item
    return labels
