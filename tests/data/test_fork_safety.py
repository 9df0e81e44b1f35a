"""Data-loader workers are forked from a process that has already decoded video (the main process reads
test videos at every epoch end, for instance): their decoding must not hang."""

from __future__ import annotations

import multiprocessing as mp

from singularity_vl.data.video_reader import read_clip
from singularity_vl.data.video_writer import moving_square_frames, write_video


def _read_in_child(path: str, queue) -> None:
    clip = read_clip(path, 4, "middle")
    queue.put(clip.frames.shape)


def test_forked_workers_decode_after_the_parent_did(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, moving_square_frames(12, 120, 160, seed=0), fps=10, gop=4)
    expected = read_clip(path, 4, "middle").frames.shape  # the parent decodes and converts first
    ctx = mp.get_context("fork")
    for _ in range(3):
        queue = ctx.Queue()
        child = ctx.Process(target=_read_in_child, args=(str(path), queue))
        child.start()
        child.join(30)
        hung = child.is_alive()
        if hung:
            child.kill()
        assert not hung, "a forked process hung decoding video after its parent had decoded"
        assert queue.get(timeout=5) == expected
