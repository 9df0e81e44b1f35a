"""The release's image compression (its `preprocess/compress.py`, file_type=image): every image resized so
that its shorter side is 224 pixels, aspect ratio kept (sides truncated to whole pixels, small images
enlarged too), with Pillow's default filter for the mode (bicubic for RGB/L, nearest for P and 1), saved
under the same relative path, in the format its file name says (Pillow's defaults: JPEG quality 75). As in
the release, a file that cannot be converted is copied unchanged; unlike the release, it is also named in
the summary.
Parallel and resumable: existing outputs are skipped, each output is written under a temporary name."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def release_size(width: int, height: int, size: int = 224) -> tuple[int, int]:
    """(w, h) after the release's resize: the shorter side becomes `size`, the other `size * ratio`
    truncated to an integer."""
    ratio = width / height
    if width > height:
        return int(ratio * size), size
    return size, int(size / ratio)


def compress_image(src: str | Path, dst: str | Path, size: int = 224) -> tuple[int, int]:
    """Resize `src` as the release did and write it to `dst` (same format, via a temporary file)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    with Image.open(src) as img:
        # the format follows the file name, as the release's `save(output_path)` does
        fmt = Image.registered_extensions().get(dst.suffix.lower(), img.format)
        out = img.resize(release_size(img.width, img.height, size))
        out.save(tmp, format=fmt)
    os.replace(tmp, dst)
    return out.size


@dataclass
class ImageSummary:
    """What `prepare_images` did: converted, already present, copied unchanged (with the error)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    copied: dict[str, str] = field(default_factory=dict)

    def record(self, src: str, err: str | None) -> None:
        if err:
            self.copied[src] = err
        else:
            self.done.append(src)

    def text(self) -> str:
        lines = [
            f"{len(self.done)} resized, {len(self.skipped)} already done, "
            f"{len(self.copied)} could not be read and were copied unchanged"
        ]
        lines += [f"  COPIED {src}: {err}" for src, err in sorted(self.copied.items())]
        return "\n".join(lines)


def _job(src: str, dst: str, size: int) -> tuple[str, str | None]:
    try:
        compress_image(src, dst, size)
        return src, None
    except Exception as e:  # noqa: BLE001 - the release copies any file it cannot convert; so do we, and say so
        Path(dst).with_name(f".{Path(dst).name}.part").unlink(missing_ok=True)
        shutil.copyfile(src, dst)
        return src, f"{type(e).__name__}: {e}"


def prepare_images(
    src_dir: str | Path,
    dst_dir: str | Path,
    size: int = 224,
    workers: int | None = None,
    progress: bool = True,
) -> ImageSummary:
    """Compress every image under `src_dir` into `dst_dir` (same relative paths)."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir}: source folder not found")
    if src_dir.resolve() == dst_dir.resolve():
        raise ValueError(f"{dst_dir}: the output folder must not be the source folder")
    dst_real = dst_dir.resolve()
    summary = ImageSummary()
    jobs = []
    for src in sorted(p for p in src_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        if src.resolve().is_relative_to(dst_real):
            continue
        dst = dst_dir / src.relative_to(src_dir)
        if dst.is_file() and dst.stat().st_size > 0:
            summary.skipped.append(str(src))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((str(src), str(dst), size))
    workers = workers or min(4, os.cpu_count() or 1)
    bar = tqdm(total=len(jobs), desc="images", unit="img", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            summary.record(*_job(*job))
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for src, err in pool.map(_job, *zip(*jobs, strict=True), chunksize=32):
                summary.record(src, err)
                bar.update()
    bar.close()
    return summary
