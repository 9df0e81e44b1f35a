"""Read exactly the wanted frames of a video (or an image) with PyAV, decoding as little as possible.

The packet index (presentation timestamps and keyframes) is read by demuxing without decoding. For each
wanted frame the reader then either keeps decoding forward or seeks to the keyframe before it, whichever
decodes fewer frames: seeking wins on short GOPs (camera/web video), continuing wins inside one long GOP
(x264's default 250). It is never worse than decoding from the start and stopping after the last wanted
frame, and far cheaper than decoding every frame (the release's PyAV path). Variable frame rate and
B-frames are handled by matching presentation timestamps, not by assuming a constant rate.

Frames come out as a player shows them: a non-square sample aspect ratio is resized to square pixels and
the container's display matrix (a phone video's rotation, a JPEG's EXIF orientation, mirroring) is
applied, so a portrait phone video is read upright (see `to_display_rgb`; frames from the decord backend
go through `show_stored`).
"""

from __future__ import annotations

import bisect
import functools
import os
import random
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
# Frames at least this large decode with slice threads.
SLICE_THREADS_MIN_PIXELS = 640 * 360
# Seeking flushes the decoder and restarts at a keyframe; counted as this many decoded frames.
SEEK_COST_FRAMES = 10
# Building the packet index (demuxing every packet) costs about one decoded frame per this many packets.
PACKETS_PER_FRAME_COST = 30
# Take the seeking path only when its estimated cost is below this share of decoding straight through.
SEEK_PATH_MAX_SHARE = 0.6


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
    ctx = stream.codec_context
    if (ctx.width or 0) * (ctx.height or 0) >= SLICE_THREADS_MIN_PIXELS:
        stream.thread_type = "SLICE"  # frame threading can deadlock in forked DataLoader workers
    else:
        ctx.thread_count = 1  # small frames: starting decoder threads costs more than it saves
    return stream


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
        rgb = frame.to_ndarray(format="rgb24")
    else:
        rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="BICUBIC").to_ndarray()
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
            rgb = picture.reformat(width=w, height=rgb.shape[0], interpolation="BICUBIC").to_ndarray()
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


def plan_decode(wanted: list[int], index: VideoIndex) -> list[tuple[str, int]]:
    """Steps to reach each distinct wanted frame in order: ("seek", keyframe) or ("continue", frame).
    Seek when that decodes fewer frames than going on from the current position."""
    steps: list[tuple[str, int]] = []
    position = -1  # next frame the decoder would produce; -1: nothing decoded yet (start = seek to 0)
    for frame in sorted(set(wanted)):
        key = index.keyframe_before(frame)
        cost_continue = frame - position if position >= 0 else frame + 1
        cost_seek = frame - key + 1 + SEEK_COST_FRAMES
        if position < 0 or (key > position and cost_seek < cost_continue):
            steps.append(("seek", key))
        steps.append(("take", frame))
        position = frame + 1
    return steps


def plan_cost(steps: list[tuple[str, int]], index: VideoIndex) -> float:
    """Estimated decoded-frame equivalents of a plan, including building the packet index."""
    cost = index.num_frames / PACKETS_PER_FRAME_COST
    position = 0
    for step, frame in steps:
        if step == "seek":
            cost += SEEK_COST_FRAMES
            position = frame
        else:
            cost += frame - position + 1
            position = frame + 1
    return cost


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
    """Frames `indices` (presentation order, duplicates allowed) as uint8 (T, H, W, 3)."""
    if is_image(path):
        img = _read_image(path)
        return np.repeat(img, len(indices), 0)
    index = index or video_index(path)
    bad = [i for i in indices if not 0 <= i < index.num_frames]
    if bad:
        raise VideoReadError(path, f"frame {bad[0]} out of range (video has {index.num_frames})")
    wanted_pts = {index.pts[i]: i for i in set(indices)}
    got: dict[int, np.ndarray] = {}
    steps = plan_decode(indices, index)
    with _open(path) as container:
        stream = _video_stream(container, path)
        decoder = None
        try:
            for step, frame_no in steps:
                if step == "seek":
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


def _container_index(stream) -> tuple[int, list[int]] | None:
    """(frame count, keyframe positions in decode order) from the container's own sample table (mp4/mov),
    read at open time: no demuxing. None when the container has no complete table (webm cues, streams)."""
    try:
        entries = stream.index_entries
        n = len(entries)
    except (AttributeError, av.FFmpegError):
        return None
    if n == 0 or stream.frames != n:
        return None
    keys = [i for i, entry in enumerate(entries) if entry.is_keyframe]
    return (n, keys) if keys else None


def _declared_fps(stream) -> float:
    """The stream's declared frame rate (1.0 when it declares none), as read alongside the sample table."""
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 1.0


def _decode_sequential(container, stream, indices: list[int], path) -> tuple[np.ndarray, list[float]]:
    """Decode from the start (decoder output is presentation order), keep `indices`, stop after the last."""
    need = set(indices)
    last = max(indices)
    got: dict[int, np.ndarray] = {}
    times: dict[int, float] = {}
    t0 = None
    sar = sample_aspect_ratio(stream)
    try:
        for i, frame in enumerate(container.decode(stream)):
            t0 = frame.time if t0 is None else t0
            if i in need:
                got[i] = to_display_rgb(frame, sar, stream=stream)
                times[i] = (frame.time or 0.0) - (t0 or 0.0)
            if i >= last:
                break
    except av.FFmpegError as e:
        raise VideoReadError(path, f"decoding failed ({e})") from e
    if len(got) < len(need):
        raise VideoReadError(path, f"truncated: frame {min(need - set(got))} could not be decoded")
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
        with _open(path) as container:
            stream = _video_stream(container, path)
            quick = _container_index(stream)
            if quick is not None:
                n, fps = quick[0], _declared_fps(stream)
            else:
                index = video_index(path)
                n, fps = index.num_frames, index.fps
            frames, times = _decode_sequential(container, stream, list(range(n)), path)
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

    When the container's sample table shows that seeking would not clearly pay off (one GOP, wanted frames
    close together, or a short file), frames are decoded straight from the start with no index pass;
    otherwise the packet index is built (cached) and the reader seeks keyframe to keyframe."""
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
    idx = None
    with _open(path) as container:
        stream = _video_stream(container, path)
        quick = _container_index(stream)
        if quick is not None:
            n, keys = quick
            fps = _declared_fps(stream)
            idx = sample_frame_indices(num_frames, n, mode, rng, fps, max_num_frames)
            approx = VideoIndex(tuple(range(n)), tuple(keys), fps, 0.0)
            straight = max(idx) + 1
            if plan_cost(plan_decode(idx, approx), approx) >= SEEK_PATH_MAX_SHARE * straight:
                frames, times = _decode_sequential(container, stream, idx, path)
                return Clip(frames, idx, fps, n, times)
    index = video_index(path)
    if idx is None or index.num_frames != quick[0]:
        idx = sample_frame_indices(num_frames, index.num_frames, mode, rng, index.fps, max_num_frames)
    frames = read_frames(path, idx, index)
    t0 = index.pts[0]
    times = [(index.pts[i] - t0) * index.time_base if index.time_base else i / index.fps for i in idx]
    return Clip(frames, idx, index.fps, index.num_frames, times)
