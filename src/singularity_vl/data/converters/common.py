"""Shared by the dataset converters: reading source files with precise errors, checking that videos
exist, writing outputs atomically, and the counts printed at the end."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from singularity_vl.data import annotations


class ConvertError(ValueError):
    """A source file or entry cannot be converted; the message names the file, entry and key."""


def read_json(path: str | Path, kind: type | tuple[type, ...] = (list, dict)) -> Any:
    return annotations.read_json(path, kind, ConvertError)


def read_csv(path: str | Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header; every `required` column must be present and non-empty."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ConvertError(f"{path}: missing column(s) {missing} (found {reader.fieldnames})")
        rows = list(reader)
    for i, row in enumerate(rows):
        empty = [c for c in required if not (row.get(c) or "").strip()]
        if empty:
            raise ConvertError(f"{path}: line {i + 2}: empty value for {empty}")
    return rows


def field_of(entry: Any, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """`entry[key]`, which must exist and have type `kind` (error names `where` and the key)."""
    if not isinstance(entry, dict):
        raise ConvertError(f"{where}: expected an object, got {type(entry).__name__}")
    if key not in entry:
        raise ConvertError(f"{where}: missing key {key!r}")
    value = entry[key]
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise ConvertError(f"{where}: {key!r} must be a non-empty {annotations.type_names(kind)}, got {value!r}")
    return value


def video_file(name: str, ext: str | None) -> str:
    """`name` with its extension replaced by `ext` (e.g. `.webm` -> `.mp4` after `prepare-videos`)."""
    if not ext:
        return name
    ext = ext if ext.startswith(".") else "." + ext
    stem, _ = os.path.splitext(name)
    return stem + ext


@dataclass
class Summary:
    """What a converter wrote, and what it dropped (missing videos) and why."""

    dataset: str
    files: dict[str, int] = field(default_factory=dict)  # output path -> entries
    counts: dict[str, int] = field(default_factory=dict)
    missing_videos: list[str] = field(default_factory=list)
    media: str = "video"  # what the annotations point to, for messages: video | image

    def text(self) -> str:
        lines = [f"{self.dataset}:"]
        lines += [f"  {k}: {v}" for k, v in self.counts.items()]
        lines += [f"  wrote {path} ({n} entries)" for path, n in self.files.items()]
        if self.missing_videos:
            shown = ", ".join(self.missing_videos[:5]) + (" ..." if len(self.missing_videos) > 5 else "")
            lines.append(f"  skipped {len(self.missing_videos)} entries whose {self.media} is missing: {shown}")
        return "\n".join(lines)


class VideoCheck:
    """Which videos exist under `root` (None: no check). Missing ones are an error unless `skip_missing`,
    in which case their entries are dropped and listed in the summary."""

    def __init__(self, root: str | Path | None, skip_missing: bool, summary: Summary) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise ConvertError(f"{self.root}: {summary.media} root is not a directory")
        self.skip_missing = skip_missing
        self.summary = summary
        self._missing: list[str] = []

    def exists(self, rel: str) -> bool:
        if self.root is None or (self.root / rel).is_file():
            return True
        self._missing.append(rel)
        return False

    def finish(self) -> None:
        """Raise on missing videos (unless skipping); called before anything is written."""
        missing = sorted(set(self._missing))
        if missing and not self.skip_missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise ConvertError(
                f"{len(missing)} {self.summary.media}(s) not found under {self.root}: {shown}"
                " (pass --skip-missing to drop their entries)"
            )
        self.summary.missing_videos = missing


def write_outputs(out: str | Path, outputs: dict[str, list[Any]], summary: Summary) -> Summary:
    """Write each `name -> entries` as JSON under `out` (temporary name, then rename)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, entries in outputs.items():
        path = out / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(entries, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        summary.files[str(path)] = len(entries)
    return summary


def answer_list(answers: list[str], limit: int | None) -> list[str]:
    """The most frequent training answers (ties: alphabetical), as the release's QA answer lists."""
    counts: dict[str, int] = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    ranked = sorted(counts, key=lambda a: (-counts[a], a))
    return ranked[:limit] if limit else ranked
