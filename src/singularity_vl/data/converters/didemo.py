"""DiDeMo paragraph retrieval from the `{train,val,test}_data.json` files of Hendricks et al. (2017):
each video's moment descriptions, in temporal order, become one paragraph query."""

from __future__ import annotations

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


def _start(times: object, where: str) -> float:
    if not isinstance(times, list) or not times or not all(isinstance(t, list) and len(t) == 2 for t in times):
        raise ConvertError(f"{where}: 'times' must be a non-empty list of [start, end] segment pairs")
    return min(float(t[0]) for t in times)


def build_didemo(
    data_dir: str | Path,
    out: str | Path,
    video_root: str | Path | None = None,
    video_ext: str = ".mp4",
    skip_missing: bool = False,
) -> Summary:
    """didemo_ret_{train,val,test}.json: `{"video", "caption": [descriptions by start time]}`."""
    summary = Summary("didemo")
    check = VideoCheck(video_root, skip_missing, summary)
    outputs = {}
    for split in ("train", "val", "test"):
        path = Path(data_dir) / f"{split}_data.json"
        by_video: dict[str, list[tuple[float, int, str]]] = {}
        for i, e in enumerate(read_json(path, list)):
            where = f"{path}: entry {i}"
            video = field_of(e, "video", where)
            desc = " ".join(field_of(e, "description", where).split())
            by_video.setdefault(video, []).append((_start(e.get("times"), where), i, desc))
        entries = []
        for video in sorted(by_video):
            name = video_file(video, video_ext)
            if check.exists(name):
                entries.append({"video": name, "caption": [d for _, _, d in sorted(by_video[video])]})
        outputs[f"didemo_ret_{split}.json"] = entries
        summary.counts[f"{split} videos"] = len(entries)
    check.finish()
    return write_outputs(out, outputs, summary)
