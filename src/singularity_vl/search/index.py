"""`singularity-vl index`: encode a folder of videos and images once for text search.

Per file the index keeps the dual-encoder features of its sampled frames (for the first, fast ranking)
and the frames' vision tokens (the fusion inputs the ITM re-ranker cross-attends to), in safetensors
shards, with metadata in SQLite (`index.db`: path, size, mtime, duration, fps, frame times, status).
Runs are incremental (new or changed files only; deleted files dropped), corrupt files are recorded
with their error and skipped, files are decoded in worker processes while the model encodes earlier
ones, and an interrupted run (even kill -9 or a power cut: shards are fsync-ed
before the rows naming them are committed) loses at most the shard it was writing.

One indexer at a time: a run holds an exclusive `flock` on `index.lock` (released by the kernel when the
process ends, however it ends); a second run waits up to `wait` seconds, then stops with a message naming
the holder. Readers (`SearchEngine`, hence `search` and `serve`) register the shards they may read under
`readers/` (one file per open engine, itself flock-ed while the engine lives); the indexer deletes only
shards that neither the database nor a live reader refers to, so a shard is never deleted under a reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import save_file

from singularity_vl.data.transforms import EvalTransform
from singularity_vl.data.video_reader import IMAGE_SUFFIXES, VideoReadError, read_clip
from singularity_vl.devices import model_device, resolve_device
from singularity_vl.models.precision import autocast, model_width
from singularity_vl.models.singularity import SingularityBase

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
DB_NAME = "index.db"
SHARD_DIR = "shards"
LOCK_NAME = "index.lock"  # held by the one indexer allowed to change the index
READERS_DIR = "readers"  # one JSON list of shard names per open SearchEngine
READERS_LOCK = "readers.lock"  # held briefly: reader registration vs. shard deletion

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS media (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT UNIQUE NOT NULL,   -- relative to the indexed folder
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,        -- ok | error
    error TEXT,
    duration REAL,
    fps REAL,
    frame_indices TEXT,          -- JSON: frame numbers of the sampled frames
    timestamps TEXT,             -- JSON: their times in seconds
    shard TEXT,                  -- safetensors file under shards/ holding this file's tensors
    tensor_key TEXT,             -- their names there: "<key>.feats", "<key>.frame_tokens"
    indexed_at REAL NOT NULL
);
"""


class SearchIndexError(ValueError):
    """The index cannot be built or opened as asked (wrong folder, another model, bad settings)."""


class IndexBusyError(SearchIndexError):
    """Another indexer holds the index's lock."""


@contextlib.contextmanager
def index_lock(index_dir: str | Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the exclusive right to change the index in `index_dir`; wait up to `wait` seconds for
    another holder (a process running `build_index`), then raise `IndexBusyError` naming its pid."""
    path = Path(index_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
                    waited = f" (waited {wait:g} s)" if wait > 0 else ""
                    raise IndexBusyError(
                        f"{index_dir}: another indexer (pid {holder}) is updating this index{waited}; let it finish,"
                        " or pass --wait SECONDS (Python: wait=SECONDS) to wait for it"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _readers_mutex(index_dir: Path) -> Iterator[None]:
    """Short exclusive section: a reader's look at the database plus its registration, or the
    indexer's choice and deletion of unused shards, never interleave."""
    fd = os.open(index_dir / READERS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class ReaderRegistration:
    """`readers/<pid>-<random>.json`: the shards one open engine may read, flock-ed while it lives
    (a file whose lock can be taken belongs to a process that is gone). `close` removes it."""

    def __init__(self, index_dir: Path, shards: set[str]) -> None:
        (index_dir / READERS_DIR).mkdir(exist_ok=True)
        self.path = index_dir / READERS_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, json.dumps(sorted(shards)).encode())

    def close(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


Reader = ReaderRegistration | None


def open_snapshot(index_dir: Path, read: Callable[[sqlite3.Connection], tuple[T, set[str]]]) -> tuple[T, Reader]:
    """Run `read(db)` in one read transaction (it returns its result and the shard names that result
    refers to) and register those shards as in use, as one step with respect to the indexer's shard
    deletion. On a read-only index (no registration possible, and so no indexer either) the result
    comes back unregistered (None)."""
    try:
        fd = os.open(index_dir / READERS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        log.warning("%s: cannot register as a reader (%s); reading it as a read-only index", index_dir, e)
        db = sqlite3.connect(f"file:{index_dir / DB_NAME}?mode=ro", uri=True, timeout=30)
        try:
            return _read_consistent(db, read)[0], None
        finally:
            db.close()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        db = connect(index_dir)
        try:
            result, shards = _read_consistent(db, read)
        finally:
            db.close()
        return result, ReaderRegistration(index_dir, shards)
    finally:
        os.close(fd)


def _read_consistent(db: sqlite3.Connection, read):
    db.execute("BEGIN")  # one snapshot: no commit of an indexer lands between the reads
    try:
        return read(db)
    finally:
        db.rollback()


def _live_reader_shards(index_dir: Path) -> set[str]:
    """Shards named by engines still open (stale registrations of dead processes are removed)."""
    used: set[str] = set()
    for f in sorted((index_dir / READERS_DIR).glob("*.json")):
        try:
            fd = os.open(f, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its engine is open
                used.update(json.loads(f.read_text(encoding="utf-8") or "[]"))
            else:
                f.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return used


@dataclass
class IndexSummary:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error)

    def text(self) -> str:
        lines = [
            f"indexed: {self.added} new, {self.updated} changed, {self.removed} removed, {self.unchanged} unchanged,"
            f" {len(self.failed)} failed"
        ]
        lines += [f"  failed: {p}: {e}" for p, e in self.failed[:10]]
        if len(self.failed) > 10:
            lines.append(f"  ... and {len(self.failed) - 10} more (see the media table's error column)")
        return "\n".join(lines)


def connect(index_dir: str | Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(Path(index_dir) / DB_NAME), timeout=30)
    db.executescript(SCHEMA)
    return db


def generation(index_dir: str | Path) -> str:
    """A token that changes with every committed change to the index (servers poll it to reload)."""
    path = Path(index_dir) / DB_NAME
    # read-write where allowed (never create): it may roll back what a killed indexer left half-done
    db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return row[0] if row else ""
    finally:
        db.close()


def _bump_generation(db: sqlite3.Connection) -> None:
    """Inside the caller's transaction: mark the index as changed."""
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?)", (uuid.uuid4().hex,))


def model_fingerprint(model_dir: str | Path) -> str:
    """Identifies the weights an index was built with (config + weight file size and mtime)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256((model_dir / "config.json").read_bytes())
    st = (model_dir / "model.safetensors").stat()
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def scan_media(root: Path, skip: Path | None = None) -> dict[str, os.stat_result]:
    """Relative path -> stat of every video / image file under `root` (hidden entries and `skip` ignored)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (skip is None or Path(dirpath, d).resolve() != skip)
        )
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in MEDIA_SUFFIXES:
                continue
            full = Path(dirpath) / name
            found[full.relative_to(root).as_posix()] = full.stat()
    return found


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM meta").fetchall())


def _check_meta(db: sqlite3.Connection, wanted: dict[str, str], rebuild: bool) -> None:
    have = _meta(db)
    differs = {k: (have.get(k), v) for k, v in wanted.items() if k in have and have[k] != v}
    if differs and not rebuild:
        detail = "; ".join(f"{k}: index has {a!r}, asked {b!r}" for k, (a, b) in differs.items())
        raise SearchIndexError(f"this index was built differently ({detail}); pass --rebuild or use another --out")
    if differs:
        db.execute("DELETE FROM media")
    if differs or "generation" not in have:
        _bump_generation(db)
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(wanted.items()))
    db.commit()


def _clean_shards(index_dir: Path, db: sqlite3.Connection) -> None:
    """Remove shard files that no row and no open reader refers to (left by an interrupted run, or
    superseded; a shard a running server still reads stays until that server has reloaded)."""
    with _readers_mutex(index_dir):
        used = {r[0] for r in db.execute("SELECT DISTINCT shard FROM media WHERE shard IS NOT NULL")}
        used |= _live_reader_shards(index_dir)
        for f in (index_dir / SHARD_DIR).glob("*"):
            if f.name not in used:
                f.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@torch.no_grad()
def _encode(model: SingularityBase, clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and frame tokens of a batch of clips, computed on the model's device (bf16 where the device
    runs it natively, see `resolve_precision`), returned on the CPU."""
    device = model_device(model)
    with autocast("auto", device, width=model_width(model)):  # bf16 on GPUs and on CPUs that have it natively
        enc = model.encode_video(torch.stack(clips).to(device, non_blocking=True))
        feats = model.video_features(enc.pooled)
    return feats.float().cpu(), enc.frame_tokens.float().cpu()


def build_index(
    video_dir: str | Path,
    model_dir: str | Path,
    out: str | Path,
    num_frames: int = 8,
    batch_size: int = 8,
    shard_size: int = 128,
    rebuild: bool = False,
    progress: bool = True,
    wait: float = 0.0,
    device: str | torch.device | None = None,
    workers: int | None = None,
) -> IndexSummary:
    """Create or update the index of `video_dir` under `out` with the model in `model_dir`, encoding on
    `device` (default: a GPU when there is one; bf16 there); `wait`: seconds to wait for another indexer
    of the same index before giving up (`IndexBusyError`). `workers` processes decode files ahead of the
    encoder (default `default_workers()`; 0: decode in this process, between batches)."""
    from tqdm import tqdm

    root = Path(video_dir).resolve()
    if not root.is_dir():
        raise SearchIndexError(f"{video_dir}: not a directory")
    model_dir = Path(model_dir).resolve()
    if not model_dir.is_file() and not (model_dir / "config.json").is_file():
        raise SearchIndexError(
            f"{model_dir}: not a model directory (expected config.json + model.safetensors) nor a release .pth"
        )
    if num_frames < 1 or shard_size < 1 or batch_size < 1:
        raise SearchIndexError("num_frames, batch_size and shard_size must be >= 1")
    if workers is not None and workers < 0:
        raise SearchIndexError(f"workers must be >= 0, got {workers}")
    index_dir = Path(out).resolve()
    (index_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    with index_lock(index_dir, wait):
        if model_dir.is_file():
            model_dir = _converted_release(model_dir, index_dir)
        return _build_locked(
            root, model_dir, index_dir, num_frames, batch_size, shard_size, rebuild, progress, tqdm, device, workers
        )


def default_workers() -> int:
    """Decoding processes beside the encoder: one per core the encoder leaves (at least 1, at most 4; a
    file's 8 frames decode several times faster than a `base` model encodes them on a GPU's host)."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class _FileLoader(torch.utils.data.Dataset):
    """One file per item, read and transformed (in a DataLoader worker): (relative path, clip tensor and
    its metadata) or (relative path, None, the reason it could not be read)."""

    def __init__(self, root: Path, files: list[str], num_frames: int, transform: EvalTransform) -> None:
        self.root, self.files, self.num_frames, self.transform = root, files, num_frames, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        rel = self.files[i]
        try:
            clip = read_clip(self.root / rel, self.num_frames, "middle")
        except VideoReadError as e:
            return rel, None, e.reason
        frames, times = clip.frames, clip.timestamps
        if len(frames) < self.num_frames:  # an image: its one frame stands for every sampled frame
            reps = -(-self.num_frames // len(frames))
            frames, times = frames.repeat(reps, 0)[: self.num_frames], (times * reps)[: self.num_frames]
        meta = {
            "duration": clip.num_frames / clip.fps if clip.fps > 0 else 0.0,
            "fps": clip.fps,
            "frame_indices": json.dumps(clip.indices),
            "timestamps": json.dumps([round(t, 3) for t in times]),
        }
        return rel, self.transform(frames), meta


def _as_is(item):
    return item


def _converted_release(path: Path, index_dir: Path) -> Path:
    """A release `.pth` converted (safely) to our format once, inside the index, keyed on the file's size
    and modification time: the index then refers to that directory like to any model directory."""
    from singularity_vl.checkpoint.release import convert_release

    st = path.stat()
    target = index_dir / "models" / f"{path.stem}-{st.st_size}-{st.st_mtime_ns}"
    if not (target / "config.json").is_file():  # written last: its presence means a complete conversion
        convert_release(path, target, task="retrieval")
    return target


def _build_locked(
    root, model_dir, index_dir, num_frames, batch_size, shard_size, rebuild, progress, tqdm, device, workers
):
    db = connect(index_dir)
    try:
        wanted = {
            "root": str(root),
            "model": str(model_dir),
            "model_fingerprint": model_fingerprint(model_dir),
            "num_frames": str(num_frames),
        }
        _check_meta(db, wanted, rebuild)
        _clean_shards(index_dir, db)
        summary = IndexSummary()
        on_disk = scan_media(root, skip=index_dir)
        known = {p: (i, s, m) for i, p, s, m in db.execute("SELECT id, path, size, mtime_ns FROM media")}
        gone = [p for p in known if p not in on_disk]
        if gone:
            with db:
                db.executemany("DELETE FROM media WHERE path = ?", [(p,) for p in gone])
                _bump_generation(db)
            summary.removed = len(gone)
        todo = []
        for rel, st in on_disk.items():
            if rel in known and known[rel][1:] == (st.st_size, st.st_mtime_ns):
                summary.unchanged += 1
            else:
                todo.append(rel)
        if todo:
            model = SingularityBase.from_pretrained(model_dir, device=resolve_device(device)).eval()
            transform = EvalTransform(model.config.vision.image_size)
            workers = default_workers() if workers is None else workers
            loader = torch.utils.data.DataLoader(
                _FileLoader(root, todo, num_frames, transform),
                batch_size=None,
                collate_fn=_as_is,
                num_workers=min(workers, len(todo)),
                prefetch_factor=max(2, batch_size) if workers > 0 else None,
            )
            loaded = iter(loader)
            bar = tqdm(total=len(todo), desc="indexing", unit="video", disable=not progress)
            for start in range(0, len(todo), shard_size):
                chunk = todo[start : start + shard_size]
                _index_chunk(db, index_dir, chunk, loaded, on_disk, known, model, batch_size, summary, bar)
            bar.close()
        _clean_shards(index_dir, db)
        return summary
    finally:
        db.close()


def _index_chunk(db, index_dir, chunk, loaded, on_disk, known, model, batch_size, summary, bar):
    """Encode and store one shard's worth of files (`chunk`, read in order from `loaded`); the shard is
    written before its rows are committed, so an interruption leaves either both or an orphan shard
    (removed by the next run)."""
    rows, tensors, pending = [], {}, []
    shard = f"{uuid.uuid4().hex}.safetensors"
    unreported = 0  # files read since the progress bar last moved (it moves when a batch is encoded)

    def flush() -> None:
        nonlocal unreported
        if pending:
            feats, tokens = _encode(model, [p[1] for p in pending])
            for (key, _), f, t in zip(pending, feats, tokens, strict=True):
                tensors[f"{key}.feats"] = f.float().contiguous()
                tensors[f"{key}.frame_tokens"] = t.half().contiguous()
            pending.clear()
        bar.update(unreported)
        unreported = 0

    for rel in chunk:
        got, video, meta = next(loaded)
        assert got == rel, (got, rel)  # the loader keeps the files' order
        st = on_disk[rel]
        key = uuid.uuid4().hex[:12]
        base = {"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "indexed_at": time.time()}
        if video is None:
            rows.append({**base, "status": "error", "error": meta})
            summary.failed.append((rel, meta))
        else:
            pending.append((key, video))
            rows.append({**base, "status": "ok", **meta, "shard": shard, "key": key})
        unreported += 1
        if len(pending) >= batch_size:
            flush()
    flush()
    if tensors:
        tmp = index_dir / SHARD_DIR / (shard + ".tmp")
        save_file(tensors, str(tmp))
        _fsync(tmp)
        tmp.replace(index_dir / SHARD_DIR / shard)
        _fsync(index_dir / SHARD_DIR)  # the rename is on disk before the rows naming it are committed
    with db:  # one transaction: the chunk's rows appear together
        _bump_generation(db)
        for row in rows:
            if row["path"] in known:
                summary.updated += 1
            else:
                summary.added += 1
            db.execute("DELETE FROM media WHERE path = ?", (row["path"],))
            db.execute(
                "INSERT INTO media (path, size, mtime_ns, status, error, duration, fps, frame_indices, timestamps,"
                " shard, tensor_key, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row["path"],
                    row["size"],
                    row["mtime_ns"],
                    row["status"],
                    row.get("error"),
                    row.get("duration"),
                    row.get("fps"),
                    row.get("frame_indices"),
                    row.get("timestamps"),
                    row.get("shard"),
                    row.get("key"),
                    row["indexed_at"],
                ),
            )
