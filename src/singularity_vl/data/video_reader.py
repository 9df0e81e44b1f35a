"""Read exactly the wanted frames of a video (or an image) with PyAV, decoding as little as possible.

An mp4/mov file carries its sample table (every frame in decode order, its timestamp, which are
keyframes), read when the file is opened: no demuxing pass is needed to know where to seek. For each
wanted frame the reader either keeps decoding forward or seeks to the keyframe before it, whichever costs
less, counting a seek as a fixed number of decoded pixels (so seeking wins on short GOPs and on small
frames, continuing wins inside one long GOP). Decoding from the start is the plan with no seek, so the
reader is never clearly worse than decoding from the start and stopping after the last wanted frame, and
far cheaper than decoding every frame (the release's PyAV path). A seek is checked where it lands (a
keyframe at the timestamp the table promises); a file where it does not (open GOPs, edit lists that drop
frames) and a container without a sample table (webm, mkv) are read through a packet index built by
demuxing the whole file once (cached), matching presentation timestamps, so variable frame rate and
B-frames are handled, not assumed away.

Frames come out as a player shows them: a non-square sample aspect ratio is resized to square pixels and
the container's display matrix (a phone video's rotation, a JPEG's EXIF orientation, mirroring) is
applied, so a portrait phone video is read upright (see `to_display_rgb`; frames from the decord backend
go through `show_stored`).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import os
import random
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from singularity_vl.data.sampling import sample_frame_indices

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
# A seek (container seek, decoder flush, restart at a keyframe) costs about as much as decoding this many
# pixels (measured with PyAV 18 / FFmpeg 8 H.264: ~0.2 ms, a quarter of a 224 px frame, a tenth of a 720p one).
SEEK_COST_PIXELS = 32_000
# A decoder that reorders B-frames takes in this many more frames after a seek before it shows the keyframe.
REORDER_DELAY_FRAMES = 2


class VideoReadError(RuntimeError):
    """A video or image could not be read: missing, empty, truncated or undecodable. Names the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class VideoIndex:
    """Presentation-ordered frame timestamps of the first video stream and which frames are keyframes."""

    pts: tuple[int, ...]  # one per frame, sorted
    keyframes: tuple[int, ...]  # frame numbers (into `pts`) of keyframes, sorted
    fps: float  # average frame rate
    time_base: float

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    def keyframe_before(self, frame: int) -> int:
        i = bisect.bisect_right(self.keyframes, frame) - 1
        return self.keyframes[max(i, 0)]


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "empty file")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, OSError) as e:
        raise VideoReadError(path, f"cannot open ({e})") from e


def _video_stream(container, path):
    if not container.streams.video:
        raise VideoReadError(path, "no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"  # frame threading can deadlock in forked DataLoader workers
    stream.codec_context.thread_count = decode_threads()
    return stream


_decode_threads: int | None = None


def set_decode_threads(count: int | None) -> None:
    """Decoder threads per file: `count` (1: one core; 0: one per core, as FFmpeg picks), or None for the
    default, `decode_threads()`."""
    global _decode_threads
    if count is not None and count < 0:
        raise ValueError(f"decoder threads must be >= 0, got {count}")
    _decode_threads = count


def decode_threads() -> int:
    """Decoder threads per file: as set by `set_decode_threads`; else 1 in a DataLoader worker (the
    workers already fill the cores) and 0 elsewhere (FFmpeg decodes the slices of a frame on every core:
    x264 writes several slices per frame, 2 at 224 px; the same CPU time, less wall time)."""
    if _decode_threads is not None:
        return _decode_threads
    loading = sys.modules.get("torch.utils.data")  # not imported: not in a DataLoader worker
    in_worker = loading is not None and loading.get_worker_info() is not None
    return 1 if in_worker else 0


# --- frames as a player shows them: sample aspect ratio, then display matrix ------------------------------


@dataclass(frozen=True)
class Orientation:
    """Quarter turns and mirrors of the display matrix, as array operations on the (square-pixel) picture:
    transpose first, then flip rows (upside down) and/or columns (left-right)."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False


UPRIGHT = Orientation()


def sample_aspect_ratio(stream) -> Fraction:
    """Width of one stored pixel over its height (the container's value, else the codec's; 1 if unset)."""
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar is not None and sar > 0:
            return Fraction(sar)
    return Fraction(1)


def orientation_from_matrix(matrix: Sequence[int]) -> Orientation:
    """The orientation of FFmpeg's 3x3 display matrix (9 integers, row-major, a b u / c d v / x y w with
    a-d in 16.16 fixed point) mapping a stored pixel (x, y) to (a x + c y, b x + d y) on screen. A rotation
    that is not a quarter turn is rounded to the nearest one."""
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return Orientation(False, d < 0, a < 0)
    return Orientation(True, b < 0, c < 0)


def orientation_from_rotate_tag(tag: str | None) -> Orientation:
    """The orientation of a `rotate` metadata tag (degrees clockwise, as older muxers wrote it)."""
    try:
        quarter = round(float(tag) / 90) % 4 if tag else 0
    except ValueError:
        return UPRIGHT
    return (UPRIGHT, Orientation(True, False, True), Orientation(False, True, True), Orientation(True, True, False))[
        quarter
    ]


def frame_orientation(frame: av.VideoFrame, stream=None) -> Orientation:
    """The display matrix attached to a decoded frame (FFmpeg 7+ exports the container's, or a JPEG's EXIF
    orientation, there); without one, the stream's `rotate` tag (written by older tools); else upright."""
    side = frame.side_data.get(SideDataType.DISPLAYMATRIX)
    raw = bytes(side) if side is not None else b""
    if len(raw) >= 36:
        return orientation_from_matrix(np.frombuffer(raw, dtype=np.int32, count=9).tolist())
    if stream is not None:
        tags = {k.lower(): v for k, v in stream.metadata.items()}
        return orientation_from_rotate_tag(tags.get("rotate"))
    return UPRIGHT


def display_size(width: int, height: int, sar: Fraction, orientation: Orientation) -> tuple[int, int]:
    """(width, height) on screen of a stored `width` x `height` picture: pixels made square by widening
    (or narrowing) by `sar`, then turned."""
    w = max(1, int(round(width * sar)))
    return (height, w) if orientation.transpose else (w, height)


def orient(rgb: np.ndarray, orientation: Orientation) -> np.ndarray:
    """(H, W, C) picture turned and mirrored as `orientation` says (a contiguous copy when it changes)."""
    if orientation == UPRIGHT:
        return rgb
    if orientation.transpose:
        rgb = rgb.transpose(1, 0, 2)
    if orientation.flip_rows:
        rgb = rgb[::-1]
    if orientation.flip_cols:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)


# Pixel conversion and scaling on the calling thread: swscale's automatic slice threads (PyAV's default)
# leave a thread pool that a forked process (a DataLoader worker) inherits without its threads, and the
# child then hangs for ever in its next conversion.
SWS_THREADS = 1


def to_display_rgb(
    frame: av.VideoFrame, sar: Fraction = Fraction(1), size: tuple[int, int] | None = None, stream=None
) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a decoded frame as a player shows it: resized to square pixels (or to
    `size` = (width, height) on screen), then turned by its display matrix (see `frame_orientation`)."""
    orientation = frame_orientation(frame, stream)
    if size is None:
        size = display_size(frame.width, frame.height, sar, orientation)
    w, h = (size[1], size[0]) if orientation.transpose else size  # the stored picture's axes
    if (w, h) == (frame.width, frame.height):
        rgb = frame.to_ndarray(format="rgb24", threads=SWS_THREADS)
    else:
        rgb = frame.reformat(
            width=w, height=h, format="rgb24", interpolation="BICUBIC", threads=SWS_THREADS
        ).to_ndarray()
    return orient(rgb, orientation)


@functools.lru_cache(maxsize=1024)
def _display_info_cached(path: str, mtime_ns: int, size: int) -> tuple[Fraction, Orientation]:
    with _open(path) as container:
        stream = _video_stream(container, path)
        sar = sample_aspect_ratio(stream)
        try:
            for frame in container.decode(stream):
                return sar, frame_orientation(frame, stream)
        except av.FFmpegError as e:
            raise VideoReadError(path, f"undecodable ({e})") from e
    raise VideoReadError(path, "no video frames")


def display_info(path: str | Path) -> tuple[Fraction, Orientation]:
    """(sample aspect ratio, orientation of the first frame) of a file, for decoders that return frames as
    stored (cached per path, size and modification time; costs one decoded frame)."""
    st = _stat(path)
    return _display_info_cached(str(path), st.st_mtime_ns, st.st_size)


def show_stored(frames: np.ndarray, sar: Fraction, orientation: Orientation) -> np.ndarray:
    """uint8 (T, H, W, 3) frames as stored -> as shown: widened by `sar` (bicubic), then turned."""
    if sar == 1 and orientation == UPRIGHT:
        return frames
    out = []
    for rgb in frames:
        if sar != 1:
            w = max(1, int(round(rgb.shape[1] * sar)))
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            rgb = picture.reformat(
                width=w, height=rgb.shape[0], interpolation="BICUBIC", threads=SWS_THREADS
            ).to_ndarray()
        out.append(orient(rgb, orientation))
    return np.stack(out)


@functools.lru_cache(maxsize=256)
def _index_cached(path: str, mtime_ns: int, size: int) -> VideoIndex:
    with _open(path) as container:
        stream = _video_stream(container, path)
        pts_list: list[int] = []
        key_pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                pts_list.append(packet.pts)
                if packet.is_keyframe:
                    key_pts.append(packet.pts)
        except av.FFmpegError as e:
            if not pts_list:
                raise VideoReadError(path, f"unreadable stream ({e})") from e
        if not pts_list:
            raise VideoReadError(path, "no video frames")
        pts_sorted = sorted(set(pts_list))
        position = {p: i for i, p in enumerate(pts_sorted)}
        keyframes = sorted({position[p] for p in key_pts if p in position}) or [0]
        rate = stream.average_rate or stream.guessed_rate
        time_base = float(stream.time_base) if stream.time_base else 0.0
        if rate:
            fps = float(rate)
        elif len(pts_sorted) > 1 and time_base:
            fps = (len(pts_sorted) - 1) / ((pts_sorted[-1] - pts_sorted[0]) * time_base)
        else:
            fps = 1.0
        return VideoIndex(tuple(pts_sorted), tuple(keyframes), fps, time_base)


def video_index(path: str | Path) -> VideoIndex:
    """The frame index of `path` (cached per path, size and modification time)."""
    st = _stat(path)
    return _index_cached(str(path), st.st_mtime_ns, st.st_size)


def _stat(path: str | Path) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise VideoReadError(path, "no such file") from None


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _read_image(path: str | Path) -> np.ndarray:
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            for frame in container.decode(stream):
                return to_display_rgb(frame, stream=stream)[None]  # EXIF orientation; JFIF density ignored
        except av.FFmpegError as e:
            raise VideoReadError(path, f"undecodable image ({e})") from e
    raise VideoReadError(path, "no image data")


def seek_cost_frames(width: int, height: int, reorders: bool) -> float:
    """The cost of one seek in decoded frames of this size (see `SEEK_COST_PIXELS`)."""
    return SEEK_COST_PIXELS / max(1, width * height) + (REORDER_DELAY_FRAMES if reorders else 0)


def _stream_seek_cost(stream) -> float:
    ctx = stream.codec_context
    return seek_cost_frames(ctx.width or 0, ctx.height or 0, bool(ctx.has_b_frames))


def plan_decode(wanted: list[int], index, seek_cost: float) -> list[tuple[str, int]]:
    """Steps to reach each distinct wanted frame in order: ("seek", keyframe) or ("take", frame), taking a
    frame by decoding forward. Seek when that decodes fewer frames (plus `seek_cost`) than going on from
    the current position; the first step seeks to the keyframe before the first wanted frame (frame 0:
    the start, no seek). `index` is a `VideoIndex` or a `SampleTable` (anything with `keyframe_before`)."""
    steps: list[tuple[str, int]] = []
    position = -1  # next frame the decoder would produce; -1: nothing decoded yet
    for frame in sorted(set(wanted)):
        key = index.keyframe_before(frame)
        if position < 0:
            if key > 0 and frame - key + seek_cost < frame:
                steps.append(("seek", key))
            else:
                steps.append(("seek", 0))
        elif key > position and frame - key + 1 + seek_cost < frame - position + 1:
            steps.append(("seek", key))
        steps.append(("take", frame))
        position = frame + 1
    return steps


def _decode_until(decoder, target: int, wanted_pts: dict[int, int], got: dict[int, np.ndarray], stream) -> None:
    """Decode forward, keeping wanted frames (by timestamp, as shown), until the frame at `target` has passed."""
    sar = sample_aspect_ratio(stream)
    for frame in decoder:
        if frame.pts is None:
            continue
        if frame.pts in wanted_pts and wanted_pts[frame.pts] not in got:
            got[wanted_pts[frame.pts]] = to_display_rgb(frame, sar, stream=stream)
        if frame.pts >= target:
            break


def read_frames(path: str | Path, indices: list[int], index: VideoIndex | None = None) -> np.ndarray:
    """Frames `indices` (presentation order, duplicates allowed) as uint8 (T, H, W, 3). Without `index`,
    an mp4/mov file is read through its sample table; with one (or without a table), through `index`."""
    if is_image(path):
        img = _read_image(path)
        return np.repeat(img, len(indices), 0)
    if index is None:
        with _open(path) as container:
            stream = _video_stream(container, path)
            table = _trusted_table(path, stream)
            if table is not None:
                _check_range(path, indices, table.num_frames)
                try:
                    return _read_with_table(container, stream, table, indices, path)[0]
                except _SeekMismatch:
                    _distrust(path)
    return _read_with_index(path, indices, index or video_index(path))


def _check_range(path, indices: list[int], num_frames: int) -> None:
    bad = [i for i in indices if not 0 <= i < num_frames]
    if bad:
        raise VideoReadError(path, f"frame {bad[0]} out of range (video has {num_frames})")


def _read_with_index(path: str | Path, indices: list[int], index: VideoIndex) -> np.ndarray:
    """Frames `indices` through the packet index: seek per keyframe group, frames matched by timestamp."""
    _check_range(path, indices, index.num_frames)
    wanted_pts = {index.pts[i]: i for i in set(indices)}
    got: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = _video_stream(container, path)
        steps = plan_decode(indices, index, _stream_seek_cost(stream))
        decoder = container.decode(stream)
        try:
            for step, frame_no in steps:
                if step == "seek":
                    if frame_no > 0:
                        container.seek(index.pts[frame_no], stream=stream, backward=True, any_frame=False)
                        decoder = container.decode(stream)
                    continue
                target = index.pts[frame_no]
                _decode_until(decoder, target, wanted_pts, got, stream)
                if frame_no not in got:
                    # the seek landed after the target (bad index in the container): decode from the start
                    container.seek(index.pts[0], stream=stream, backward=True, any_frame=False)
                    decoder = container.decode(stream)
                    _decode_until(decoder, target, wanted_pts, got, stream)
        except av.FFmpegError as e:
            raise VideoReadError(path, f"decoding failed ({e})") from e
    missing = sorted(set(indices) - set(got))
    if missing:
        raise VideoReadError(path, f"truncated: frame {missing[0]} of {index.num_frames} could not be decoded")
    return np.stack([got[i] for i in indices])


@dataclass
class Clip:
    """Frames read from one file and where they come from."""

    frames: np.ndarray  # uint8 (T, H, W, 3)
    indices: list[int]  # frame numbers read
    fps: float
    num_frames: int  # frames in the file
    timestamps: list[float]  # seconds of each returned frame


@dataclass(frozen=True)
class SampleTable:
    """An mp4/mov sample table as the demuxer read it at open time: each frame's decode timestamp (decode
    order) and which frames are keyframes. For a closed-GOP stream the k-th frame in decode order that is
    a keyframe is also the k-th frame shown, which `_read_with_table` checks after every seek."""

    dts: tuple[int, ...]
    keyframes: tuple[int, ...]
    step: int | None  # the constant difference between consecutive timestamps, None for variable rate

    @property
    def num_frames(self) -> int:
        return len(self.dts)

    def keyframe_before(self, frame: int) -> int:
        i = bisect.bisect_right(self.keyframes, frame) - 1
        return self.keyframes[max(i, 0)]


def sample_table(stream) -> SampleTable | None:
    """The container's own sample table (mp4/mov), read at open time: no demuxing. None when the container
    has no complete table (webm cues, streams) or the table marks frames the decoder drops (edit lists)."""
    try:
        entries = stream.index_entries
        n = len(entries)
    except (AttributeError, av.FFmpegError):
        return None
    if n == 0 or stream.frames != n:
        return None
    dts: list[int] = []
    keys: list[int] = []
    for i, entry in enumerate(entries):
        if entry.is_discard:
            return None
        dts.append(entry.timestamp)
        if entry.is_keyframe:
            keys.append(i)
    if not keys or keys[0] != 0:
        return None
    steps = {b - a for a, b in itertools.pairwise(dts)}
    step = steps.pop() if len(steps) == 1 else None
    return SampleTable(tuple(dts), tuple(keys), step if step and step > 0 else None)


def _declared_fps(stream) -> float:
    """The stream's declared frame rate (1.0 when it declares none), as read alongside the sample table."""
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 1.0


class _SeekMismatch(Exception):
    """A seek did not land on the keyframe the sample table promises: read through the packet index."""


# Files (path, modification time, size) whose seeks did not land where their sample table says: read
# through the packet index from then on. Bounded: the oldest are forgotten first.
_distrusted: OrderedDict[tuple[str, int, int], None] = OrderedDict()
DISTRUSTED_MAX = 4096


def _file_key(path: str | Path) -> tuple[str, int, int]:
    st = _stat(path)
    return (str(path), st.st_mtime_ns, st.st_size)


def _distrust(path: str | Path) -> None:
    _distrusted[_file_key(path)] = None
    while len(_distrusted) > DISTRUSTED_MAX:
        _distrusted.popitem(last=False)


def _trusted_table(path: str | Path, stream) -> SampleTable | None:
    """The file's sample table, unless it has none or an earlier seek showed it cannot be followed."""
    if _distrusted and _file_key(path) in _distrusted:
        return None
    return sample_table(stream)


def _lands_on(frame: av.VideoFrame, key: int, table: SampleTable, start: int) -> bool:
    """Whether the first frame shown after seeking to `key` is that keyframe: a keyframe whose timestamp is
    the table's (shifted like the first frame's: no reordering, any rate) or `key` frame steps after the
    first frame's (constant rate, B-frames allowed)."""
    if not frame.key_frame or frame.pts is None:
        return False
    offset = frame.pts - start
    return offset == table.dts[key] - table.dts[0] or (table.step is not None and offset == key * table.step)


def _read_with_table(container, stream, table: SampleTable, indices: list[int], path) -> tuple[np.ndarray, list[float]]:
    """Frames `indices` (presentation order) and their times (s) through the sample table: decoder output is
    in presentation order, so after seeking to keyframe k the j-th frame out is frame k + j. Raises
    `_SeekMismatch` when a seek lands elsewhere."""
    need = set(indices)
    steps = plan_decode(indices, table, _stream_seek_cost(stream))
    sar = sample_aspect_ratio(stream)
    time_base = float(stream.time_base) if stream.time_base else 0.0
    fps = _declared_fps(stream)
    start = stream.start_time
    got: dict[int, np.ndarray] = {}
    times: dict[int, float] = {}
    decoder = container.decode(stream)
    position = 0  # the frame the decoder shows next
    check: int | None = None  # a keyframe just sought to, to be checked on the next frame out
    try:
        for step, frame_no in steps:
            if step == "seek":
                if frame_no > 0:
                    if start is None:
                        raise _SeekMismatch
                    # demuxers take a presentation timestamp: the keyframe's, shifted as the first frame's
                    target = start + table.dts[frame_no] - table.dts[0]
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                    decoder = container.decode(stream)
                    position = check = frame_no
                continue
            for frame in decoder:
                if start is None:
                    start = frame.pts if frame.pts is not None else 0
                if check is not None:
                    if not _lands_on(frame, check, table, start):
                        raise _SeekMismatch
                    check = None
                if position in need and position not in got:
                    got[position] = to_display_rgb(frame, sar, stream=stream)
                    pts = frame.pts
                    times[position] = (pts - start) * time_base if pts is not None and time_base else position / fps
                position += 1
                if position > frame_no:
                    break
    except av.FFmpegError as e:
        raise VideoReadError(path, f"decoding failed ({e})") from e
    if len(got) < len(need):
        missing = min(need - set(got))
        raise VideoReadError(path, f"truncated: frame {missing} of {table.num_frames} could not be decoded")
    return np.stack([got[i] for i in indices]), [times[i] for i in indices]


def _read_clip_decord(path, num_frames, mode, rng, max_num_frames) -> Clip:
    try:
        import decord
    except ImportError as e:
        raise ImportError("backend='decord' needs the decord package (pip install decord)") from e
    if not Path(path).is_file():
        raise VideoReadError(path, "no such file")
    try:
        vr = decord.VideoReader(str(path), num_threads=1)
        n, fps = len(vr), float(vr.get_avg_fps())
        idx = sample_frame_indices(num_frames, n, mode, rng, fps, max_num_frames)
        frames = vr.get_batch(idx).asnumpy()
    except decord.DECORDError as e:
        raise VideoReadError(path, f"decord failed ({e})") from e
    return Clip(show_stored(frames, *display_info(path)), idx, fps, n, [i / fps for i in idx])


class DecodedClipCache:
    """Whole decoded videos kept in memory, least recently used dropped first beyond `max_bytes`: for
    corpora that fit, each file is decoded once and every later read (another epoch, another frame count)
    samples from memory. The frames are those a fresh read returns (the decoder is deterministic)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[tuple[str, int, int], tuple[np.ndarray, float, list[float]]] = OrderedDict()

    def read(self, path: str | Path) -> tuple[np.ndarray, float, list[float]]:
        """(every frame (N, H, W, 3), fps, timestamps) of `path`, decoded on the first call."""
        st = _stat(path)
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        clip = _read_sampled(path, lambda n, fps: list(range(n)))
        frames, fps, times = clip.frames, clip.fps, clip.timestamps
        entry = (frames, fps, times)
        if frames.nbytes <= self.max_bytes:
            self.entries[key] = entry
            self.bytes += frames.nbytes
            self.resize(self.max_bytes)
        return entry

    def resize(self, max_bytes: int) -> None:
        """New budget; the least recently used videos beyond it are dropped."""
        self.max_bytes = max_bytes
        while self.bytes > self.max_bytes:
            self.bytes -= self.entries.popitem(last=False)[1][0].nbytes


_clip_cache: DecodedClipCache | None = None


def set_decoded_clip_cache(max_mb: float) -> None:
    """Keep up to `max_mb` MiB of decoded videos in this process (0: off, the default). Worth it when the
    corpus fits and is read many times by one process (`num_workers=0`); a file whose later frames cannot
    be decoded is then unreadable as a whole, not only for the clips that reach those frames. Called again
    with another budget, it keeps what is cached (within the new budget)."""
    global _clip_cache
    if max_mb <= 0:
        _clip_cache = None
    elif _clip_cache is None:
        _clip_cache = DecodedClipCache(int(max_mb * 2**20))
    else:
        _clip_cache.resize(int(max_mb * 2**20))


def read_clip(
    path: str | Path,
    num_frames: int,
    mode: str = "middle",
    rng: random.Random | None = None,
    max_num_frames: int = -1,
    backend: str = "pyav",
) -> Clip:
    """Sample `num_frames` with `mode` (see `sample_frame_indices`) and read them. Images are 1-frame videos.
    `backend="decord"` uses decord when it is installed (PyAV is the default and always available); its
    frames are turned and resized to square pixels here, as the PyAV path's (see `show_stored`).

    Opens the file once: an mp4/mov file's sample table gives the frame count and keyframes, then the
    reader decodes forward or seeks keyframe to keyframe, whichever is cheaper (see `plan_decode`); other
    containers are read through the packet index (one demuxing pass per file, cached)."""
    if backend not in ("pyav", "decord"):
        raise ValueError(f"video backend must be pyav or decord, got {backend!r}")
    if is_image(path):
        frames = read_frames(path, [0] * num_frames)
        return Clip(frames, [0] * num_frames, 1.0, 1, [0.0] * num_frames)
    if backend == "decord":
        return _read_clip_decord(path, num_frames, mode, rng, max_num_frames)
    if _clip_cache is not None:
        frames, fps, times = _clip_cache.read(path)
        idx = sample_frame_indices(num_frames, len(frames), mode, rng, fps, max_num_frames)
        return Clip(frames[idx], idx, fps, len(frames), [times[i] for i in idx])
    return _read_sampled(path, lambda n, fps: sample_frame_indices(num_frames, n, mode, rng, fps, max_num_frames))


def _read_sampled(path: str | Path, choose) -> Clip:
    """The frames `choose(num_frames, fps)` picks: through the sample table when the file has one (and its
    seeks land where it says), else through the packet index. `choose` is called again only when the two
    disagree on the frame count."""
    idx: list[int] | None = None
    table_frames = -1
    with _open(path) as container:
        stream = _video_stream(container, path)
        table = _trusted_table(path, stream)
        if table is not None:
            fps = _declared_fps(stream)
            table_frames = table.num_frames
            idx = choose(table_frames, fps)
            try:
                frames, times = _read_with_table(container, stream, table, idx, path)
                return Clip(frames, idx, fps, table_frames, times)
            except _SeekMismatch:
                _distrust(path)
    index = video_index(path)
    if idx is None or index.num_frames != table_frames:
        idx = choose(index.num_frames, index.fps)
    frames = _read_with_index(path, idx, index)
    t0 = index.pts[0]
    times = [(index.pts[i] - t0) * index.time_base if index.time_base else i / index.fps for i in idx]
    return Clip(frames, idx, index.fps, index.num_frames, times)
