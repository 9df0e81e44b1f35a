"""The original release's checkpoints by name: download (resumable, with a progress bar), check, unpack
safely, convert every `.pth` to our format once, and find it again offline.

The release publishes one tarball per task (`pt`, `msrvtt_ret`, ...). Each holds several `.pth` files
(single-frame and temporal models, 5M and 17M pre-training corpora); each becomes one model named
`<archive>/<file path inside the archive without .pth>`, e.g. `msrvtt_ret/singularity_temporal_17m`.

Cache layout (`cache_dir()`; `$SINGULARITY_VL_HOME`, else `$XDG_CACHE_HOME/singularity-vl`, else
`~/.cache/singularity-vl`):
    archives/<archive>.tar.gz        the downloaded tarball (`.part` while downloading)
    models/<archive>/<model>/        config.json + model.safetensors of each converted checkpoint
    models/<archive>/manifest.json   the models of the archive and the file each came from
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_URL = "https://nlp.cs.unc.edu/data/jielei/singularity/release/ckpts"
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class ZooError(RuntimeError):
    """A release checkpoint cannot be found, downloaded, checked or unpacked (the message says what to do)."""


@dataclass(frozen=True)
class Archive:
    """One tarball of the release: its name, the task of the models inside, and what they were trained on."""

    name: str
    task: str  # pretrain | retrieval | qa
    description: str
    size: int | None = None  # bytes, when recorded (else the server's Content-Length is checked)
    sha256: str | None = None  # when recorded

    @property
    def filename(self) -> str:
        return f"{self.name}.tar.gz"


# The release README's checkpoint list: each video-text archive holds the single-frame and the temporal
# model pre-trained on 5M and on 17M pairs (4 files); the image-text ones (coco, flickr, vqa) hold two.
ARCHIVES: dict[str, Archive] = {
    a.name: a
    for a in (
        Archive("pt", "pretrain", "pre-trained on 5M and 17M pairs (single-frame and temporal)"),
        Archive("msrvtt_ret", "retrieval", "fine-tuned for MSRVTT text-to-video retrieval"),
        Archive("didemo_ret", "retrieval", "fine-tuned for DiDeMo paragraph-to-video retrieval"),
        Archive("anet_ret", "retrieval", "fine-tuned for ActivityNet Captions paragraph-to-video retrieval"),
        Archive("ssv2l_ret", "retrieval", "fine-tuned for SSv2-label retrieval (a temporal task)"),
        Archive("ssv2t_ret", "retrieval", "fine-tuned for SSv2-template retrieval (a temporal task)"),
        Archive("msrvtt_qa", "qa", "fine-tuned for MSRVTT-QA"),
        Archive("anet_qa", "qa", "fine-tuned for ActivityNet-QA"),
        Archive("coco_ret", "retrieval", "fine-tuned for COCO image-text retrieval"),
        Archive("flickr_ret", "retrieval", "fine-tuned for Flickr30K image-text retrieval"),
        Archive("vqa", "qa", "fine-tuned for VQA v2"),
    )
}


def cache_dir() -> Path:
    """Where downloads and converted models live (created on demand)."""
    if os.environ.get("SINGULARITY_VL_HOME"):
        return Path(os.environ["SINGULARITY_VL_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "singularity-vl"


def base_url() -> str:
    """The release's checkpoint folder, or a mirror named by `$SINGULARITY_VL_BASE_URL`."""
    return os.environ.get("SINGULARITY_VL_BASE_URL", DEFAULT_BASE_URL).rstrip("/")


def split_name(name: str) -> tuple[Archive, str | None] | None:
    """(archive, model path or None) when `name` is a zoo name (`msrvtt_ret` or `msrvtt_ret/<model>`)."""
    head, _, rest = str(name).partition("/")
    if head not in ARCHIVES:
        return None
    return ARCHIVES[head], rest.strip("/") or None


# --- download -------------------------------------------------------------------------------------------


def _total_from_headers(resp, offset: int) -> int | None:
    """The whole file's size from a 206 `Content-Range: bytes a-b/total` or a 200 `Content-Length`."""
    if resp.status == 206:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def download(url: str, dest: Path, size: int | None = None, sha256: str | None = None, progress: bool = True) -> Path:
    """Fetch `url` to `dest` through `dest.part`, resuming a partial file with an HTTP Range request;
    check the size (recorded, else announced by the server) and the sha256 when recorded."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "singularity-vl"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and size is not None and offset == size:  # already complete
            resp = None
        elif e.code == 416:
            raise ZooError(f"{part}: the server has nothing past byte {offset}; delete this file and run again") from e
        else:
            raise ZooError(f"cannot download {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ZooError(
            f"cannot download {url} ({reason}). Connect to the internet, point SINGULARITY_VL_BASE_URL at a"
            f" mirror, or download the file yourself and put it at {dest}"
        ) from e
    if resp is not None:
        with resp:
            if resp.status != 206:  # the server ignored the Range header: start over
                offset = 0
            total = _total_from_headers(resp, offset)
            if size is not None and total is not None and total != size:
                raise ZooError(f"{url}: the server announces {total} bytes, expected {size}")
            expected = size if size is not None else total
            with (
                open(part, "ab" if offset else "wb") as f,
                tqdm(
                    total=expected,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=not progress,
                ) as bar,
            ):
                try:
                    while chunk := resp.read(_CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
                except (OSError, ValueError, http.client.HTTPException) as e:  # cut: keep .part to resume
                    raise ZooError(f"download of {url} interrupted ({e}); run again to resume") from e
    else:
        expected = size
    got = part.stat().st_size
    if expected is not None and got != expected:
        raise ZooError(
            f"download of {url} stopped at {got} of {expected} bytes; run again to resume"
            if got < expected
            else f"{part}: {got} bytes, more than the expected {expected}; delete it and run again"
        )
    if sha256 is not None:
        digest = _sha256(part)
        if digest != sha256:
            part.unlink()
            raise ZooError(f"{url}: sha256 {digest} does not match the recorded {sha256}; the file was removed")
    part.replace(dest)
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- unpack and convert ---------------------------------------------------------------------------------


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Unpack `archive` into `dest` with tarfile's `data` filter (no absolute paths, no `..`, no links
    leaving `dest`, no device files); return the `.pth` files, sorted."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as e:
        raise ZooError(f"{archive}: refused to unpack member {e.tarinfo.name!r}: {e}") from e
    except (tarfile.TarError, EOFError) as e:
        raise ZooError(f"{archive}: not a readable tar archive ({e}); delete it and download again") from e
    return sorted(p for p in dest.rglob("*.pth") if p.is_file())


def model_name(archive: Archive, pth: Path, root: Path) -> str:
    """`<archive>/<path inside the archive without .pth>`, without a leading folder named after the archive."""
    parts = list(pth.relative_to(root).with_suffix("").parts)
    while len(parts) > 1 and parts[0] in (archive.name, "ckpts", "release"):
        parts = parts[1:]
    return "/".join([archive.name, *parts])


def _read_manifest(archive: Archive) -> dict | None:
    path = cache_dir() / "models" / archive.name / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def prepare(name: str, progress: bool = True) -> dict[str, Path]:
    """Make the archive of zoo name `name` ready: download (or resume), unpack, convert each checkpoint.
    Return {model name: converted directory}; a second call works offline from the cache."""
    found = split_name(name)
    if found is None:
        raise ZooError(f"{name!r} is not a release archive; known: {', '.join(ARCHIVES)}")
    archive = found[0]
    models_root = cache_dir() / "models" / archive.name
    manifest = _read_manifest(archive)
    if manifest is None:
        with _lock(cache_dir() / "archives" / f"{archive.name}.lock"):  # one process fetches, the others wait
            manifest = _read_manifest(archive) or _fetch_and_convert(archive, models_root, progress)
    return {model: models_root / entry["dir"] for model, entry in manifest["models"].items()}


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` for the duration of the block (POSIX; no-op elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            import fcntl
        except ImportError:  # not POSIX
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fetch_and_convert(archive: Archive, models_root: Path, progress: bool) -> dict:
    """Download (or resume) the archive, unpack it in a staging folder, convert each `.pth`, and publish the
    converted models with their manifest in one rename."""
    from singularity_vl.checkpoint.release import convert_release

    tarball = cache_dir() / "archives" / archive.filename
    if not tarball.is_file():
        download(f"{base_url()}/{archive.filename}", tarball, archive.size, archive.sha256, progress)
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}-", dir=tarball.parent))
    try:
        checkpoints = safe_extract(tarball, staging)
        if not checkpoints:
            raise ZooError(f"{tarball}: no .pth checkpoint inside")
        building = models_root.with_name(models_root.name + ".converting")
        shutil.rmtree(building, ignore_errors=True)
        entries = {}
        for pth in checkpoints:
            model = model_name(archive, pth, staging)
            rel = model.split("/", 1)[1]
            _, report = convert_release(pth, building / rel)
            entries[model] = {"dir": rel, "file": str(pth.relative_to(staging)), "task": report.source_task}
        manifest = {"archive": archive.filename, "models": entries}
        (building / MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(models_root, ignore_errors=True)
        building.replace(models_root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def resolve(name: str, progress: bool = True) -> Path:
    """The converted directory of a zoo model. `msrvtt_ret` alone is enough when the archive holds one
    model; otherwise the message lists the names to choose from."""
    found = split_name(name)
    if found is None:
        raise ZooError(f"{name!r} is not a release model; known archives: {', '.join(ARCHIVES)}")
    archive, sub = found
    models = prepare(archive.name, progress)
    if sub is None:
        if len(models) == 1:
            return next(iter(models.values()))
        raise ZooError(f"{archive.name} holds {len(models)} models; name one: {', '.join(models)}")
    full = f"{archive.name}/{sub}"
    if full in models:
        return models[full]
    matches = [m for m in models if m.endswith("/" + sub.split("/")[-1])]
    if len(matches) == 1:
        return models[matches[0]]
    raise ZooError(f"{archive.name} has no model {sub!r}; it holds: {', '.join(models)}")


def list_models() -> list[dict[str, str]]:
    """Every archive and, once converted, each of its models with its cached directory."""
    rows = []
    for archive in ARCHIVES.values():
        manifest = _read_manifest(archive)
        if manifest is None:
            rows.append(
                {"name": archive.name, "task": archive.task, "status": "not downloaded", "about": archive.description}
            )
            continue
        for model, entry in manifest["models"].items():
            path = cache_dir() / "models" / archive.name / entry["dir"]
            rows.append({"name": model, "task": entry["task"], "status": "cached", "about": str(path)})
    return rows
