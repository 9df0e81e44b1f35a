"""The paper's SSv2 temporal retrieval tasks from the Something-Something v2 release files.

Template retrieval: a query is one of the 174 templates with its placeholders written as plain words
("Pushing [something] from left to right" -> "Pushing something from left to right"); training pairs
are every training video with its template; the test set takes `per_template` (12) validation videos
of each template (2,088), a template's ground truth being all its test videos. Label retrieval: the
same videos, a query being each video's filled-in label ("pushing a pen from left to right")."""

from __future__ import annotations

import random
import re
from pathlib import Path

from singularity_vl.data.converters.common import (
    ConvertError,
    Summary,
    VideoCheck,
    field_of,
    read_json,
    video_file,
    write_outputs,
)

_PLACEHOLDER = re.compile(r"\[([^\[\]]+)\]")
OUTPUTS = (
    "ssv2_ret_template_train.json",
    "ssv2_ret_template_val_small.json",
    "ssv2_ret_label_train.json",
    "ssv2_ret_label_val_small.json",
)


def normalise_template(template: str) -> str:
    """'[something]'-style placeholders -> their words, whitespace collapsed (the labels file's spelling)."""
    return " ".join(_PLACEHOLDER.sub(r"\1", template).split())


def _entries(path: str | Path, templates: dict[str, str]) -> list[dict[str, str]]:
    """`{"id", "label", "template"}` of each entry, template normalised and checked against the labels."""
    out = []
    for i, entry in enumerate(read_json(path, list)):
        where = f"{path}: entry {i}"
        vid = field_of(entry, "id", where, (str, int))
        label = field_of(entry, "label", where)
        template = normalise_template(field_of(entry, "template", where))
        if template not in templates:
            raise ConvertError(f"{where}: template {template!r} is not in the labels file")
        out.append({"id": str(vid), "label": " ".join(label.split()), "template": template})
    return out


def build_ssv2(
    labels: str | Path,
    train: str | Path,
    validation: str | Path,
    out: str | Path,
    video_root: str | Path | None = None,
    seed: int = 0,
    per_template: int = 12,
    video_ext: str = ".webm",
    skip_missing: bool = False,
) -> Summary:
    """Write the four SSv2 files (see `OUTPUTS`) under `out`; deterministic given `seed`."""
    label_map = read_json(labels, dict)
    templates = {" ".join(str(k).split()): str(v) for k, v in label_map.items()}
    summary = Summary("ssv2")
    check = VideoCheck(video_root, skip_missing, summary)
    train_entries = [e for e in _entries(train, templates) if check.exists(video_file(e["id"], video_ext))]
    val_entries = [e for e in _entries(validation, templates) if check.exists(video_file(e["id"], video_ext))]
    check.finish()

    by_template: dict[str, list[dict[str, str]]] = {t: [] for t in templates}
    for e in val_entries:
        by_template[e["template"]].append(e)
    rng = random.Random(seed)
    test: list[dict[str, str]] = []
    short = {t: len(v) for t, v in by_template.items() if len(v) < per_template}
    if short:
        shown = ", ".join(f"{t!r} ({n})" for t, n in list(short.items())[:3])
        raise ConvertError(
            f"{validation}: {len(short)} template(s) have fewer than {per_template} validation videos: {shown}"
        )
    for template in sorted(by_template):
        chosen = rng.sample(sorted(by_template[template], key=lambda e: e["id"]), per_template)
        test.extend(sorted(chosen, key=lambda e: e["id"]))

    def name(e: dict[str, str]) -> str:
        return video_file(e["id"], video_ext)

    template_test = [
        {"video": [name(e) for e in test if e["template"] == t], "caption": t} for t in sorted(by_template)
    ]
    outputs = {
        OUTPUTS[0]: [{"video": name(e), "caption": e["template"]} for e in train_entries],
        OUTPUTS[1]: template_test,
        OUTPUTS[2]: [{"video": name(e), "caption": e["label"]} for e in train_entries],
        OUTPUTS[3]: [{"video": name(e), "caption": e["label"]} for e in test],
    }
    summary.counts = {
        "templates": len(templates),
        "train videos": len(train_entries),
        "validation videos": len(val_entries),
        "test videos": len(test),
    }
    return write_outputs(out, outputs, summary)
