"""The release's pre-compression of videos: re-encode at a lower frame rate with the shorter side at
224 (or 360) pixels, optionally only the first N seconds (as for DiDeMo). Parallel, resumable (finished
outputs are skipped; each output is written under a temporary name and renamed; a folder's options are
recorded, and a run with other options into it is refused), with a summary.

Outputs are upright with square pixels (a source's display rotation and sample aspect ratio are applied).
`SRC/dir/name.ext` becomes `DST/dir/name.mp4`, the name the dataset converters' `--video-ext .mp4` writes
into the annotations; sources that would share an output (`a.webm` and `a.mp4` side by side) are not
converted and are reported as failed, naming each other."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import av
from tqdm import tqdm

from singularity_vl.data.video_reader import display_size, frame_orientation, sample_aspect_ratio, to_display_rgb
from singularity_vl.data.video_writer import even_size, write_video

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".wmv"}


def _frames_at_fps(path: Path, fps: float, size: int, trim: float | None) -> Iterator:
    """Frames of `path` at `fps`, upright with square pixels (as a player shows them), shorter side `size`."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        sar = sample_aspect_ratio(stream)
        next_t = 0.0
        start = None
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            start = frame.time if start is None else start
            t = frame.time - start
            if trim is not None and t >= trim:
                break
            if t + 1e-6 < next_t:
                continue
            next_t += 1.0 / fps
            while next_t <= t:  # a gap in a variable-rate source: do not emit catch-up frames
                next_t += 1.0 / fps
            shown = display_size(frame.width, frame.height, sar, frame_orientation(frame, stream))
            yield to_display_rgb(frame, sar, even_size(*shown, size), stream)


def compress_video(
    src: str | Path, dst: str | Path, fps: float = 2.0, size: int = 224, trim: float | None = None, crf: int = 23
) -> Path:
    """Re-encode `src` to H.264 `dst` at `fps` frames per second, shorter side `size`."""
    frames = _frames_at_fps(Path(src), fps, size, trim)
    try:
        return write_video(dst, frames, fps=fps, gop=max(1, int(round(fps * 2))), crf=crf)
    except StopIteration:
        raise ValueError(f"{src}: no decodable frames") from None


@dataclass
class PrepareSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def record(self, src: str, err: str | None) -> None:
        if err:
            self.failed[src] = err
        else:
            self.done.append(src)

    def text(self) -> str:
        lines = [f"{len(self.done)} converted, {len(self.skipped)} already done, {len(self.failed)} failed"]
        lines += [f"  FAILED {src}: {err}" for src, err in sorted(self.failed.items())]
        return "\n".join(lines)


def _job(src: str, dst: str, fps: float, size: int, trim: float | None) -> tuple[str, str | None]:
    try:
        compress_video(src, dst, fps, size, trim)
        return src, None
    except Exception as e:  # noqa: BLE001 - every failure is reported in the summary, none stops the run
        for leftover in Path(dst).parent.glob(Path(dst).name + ".part*"):
            leftover.unlink(missing_ok=True)
        return src, f"{type(e).__name__}: {e}"


def output_path(src: Path, src_dir: Path, dst_dir: Path) -> Path:
    """Where `src` (under `src_dir`) is written: the same relative path under `dst_dir`, as `.mp4`."""
    return (dst_dir / src.relative_to(src_dir)).with_suffix(".mp4")


def plan_outputs(src_dir: Path, dst_dir: Path) -> tuple[dict[Path, Path], dict[str, str]]:
    """(source -> output for every video under `src_dir`, source -> error for sources whose output another
    source would also be written to). Files under `dst_dir` (outputs, temporary files) are never sources."""
    src_real, dst_real = src_dir.resolve(), dst_dir.resolve()
    if src_real == dst_real:
        raise ValueError(f"{dst_dir}: the output folder must not be the source folder (outputs would replace sources)")
    by_output: dict[Path, list[Path]] = {}
    for src in sorted(p for p in src_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
        if src.resolve().is_relative_to(dst_real):
            continue
        by_output.setdefault(output_path(src, src_dir, dst_dir), []).append(src)
    plan, clashes = {}, {}
    for dst, sources in by_output.items():
        if len(sources) == 1:
            plan[sources[0]] = dst
            continue
        for src in sources:
            others = ", ".join(o.name for o in sources if o != src)
            clashes[str(src)] = f"its output {dst} is also the output of {others}; rename one of them"
    return plan, clashes


SETTINGS_FILE = "prepare_settings.json"


def check_settings(dst_dir: Path, settings: dict[str, float | int | None]) -> None:
    """Finished outputs are reused, so a folder holds videos made with one set of options: the first run
    records them in `dst_dir/prepare_settings.json`, a later run with other options stops with an error."""
    path = dst_dir / SETTINGS_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: unreadable ({e}); remove it if {dst_dir} holds only this command's output"
            ) from e
        if before != settings:
            was = " ".join(f"--{k} {v}" for k, v in before.items() if v is not None)
            now = " ".join(f"--{k} {v}" for k, v in settings.items() if v is not None)
            raise ValueError(
                f"{dst_dir} holds videos made with {was}, not {now}: use another output folder (or the same options)"
            )
        return
    dst_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings) + "\n")


def prepare_videos(
    src_dir: str | Path,
    dst_dir: str | Path,
    fps: float = 2.0,
    size: int = 224,
    trim: float | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Convert every video under `src_dir` to `dst_dir/<same relative path>.mp4` (see `plan_outputs`)."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir}: not a directory")
    summary = PrepareSummary()
    plan, clashes = plan_outputs(src_dir, dst_dir)
    check_settings(dst_dir, {"fps": fps, "size": size, "trim": trim})
    summary.failed.update(clashes)
    jobs = []
    for src, dst in plan.items():
        if dst.is_file() and dst.stat().st_size > 0:
            summary.skipped.append(str(src))
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((str(src), str(dst)))
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    bar = tqdm(total=len(jobs), desc="prepare-videos", unit="video", disable=not progress)
    if workers == 1:
        results = (_job(s, d, fps, size, trim) for s, d in jobs)
        for src, err in results:
            summary.record(src, err)
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_job, s, d, fps, size, trim) for s, d in jobs]
            for fut in as_completed(futures):
                src, err = fut.result()
                summary.record(src, err)
                bar.update()
    bar.close()
    failures = dst_dir / "prepare_failures.json"
    if summary.failed:
        dst_dir.mkdir(parents=True, exist_ok=True)
        failures.write_text(json.dumps(summary.failed, indent=2))
    else:
        failures.unlink(missing_ok=True)  # a clean run: failures listed by an earlier run are gone
    return summary
