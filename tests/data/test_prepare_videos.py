"""`singularity-vl prepare-videos`: fps, size, trim, resumable, failures summarised."""

from __future__ import annotations

from singularity_vl.cli import main
from singularity_vl.data.video_reader import video_index
from singularity_vl.data.video_writer import moving_square_frames, write_video


def test_prepare_videos_end_to_end(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_video(src / "a.mp4", moving_square_frames(100, 120, 160), fps=25, gop=25)  # 4 s
    write_video(src / "sub" / "b.webm", moving_square_frames(50, 90, 120), fps=25, codec="libvpx-vp9", gop=10)
    (src / "bad.mp4").write_bytes(b"garbage" * 100)
    dst = tmp_path / "dst"
    rc = main(["prepare-videos", str(src), str(dst), "--fps", "2", "--size", "60", "--trim", "3", "--workers", "2"])
    out = capsys.readouterr().out
    assert rc == 1 and "2 converted, 0 already done, 1 failed" in out and "bad.mp4" in out
    a = video_index(dst / "a.mp4")
    assert a.num_frames == 6 and round(a.fps) == 2  # 3 s trimmed at 2 fps
    b = video_index(dst / "sub" / "b.mp4")
    assert b.num_frames == 4  # 2 s at 2 fps
    import av

    with av.open(str(dst / "a.mp4")) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (80, 60)  # shorter side 60, aspect kept
    assert (dst / "prepare_failures.json").is_file()
    assert not list(dst.rglob("*.part*"))
    mtime = (dst / "a.mp4").stat().st_mtime_ns
    rc = main(["prepare-videos", str(src), str(dst), "--fps", "2", "--size", "60", "--workers", "1"])
    assert "0 converted, 2 already done, 1 failed" in capsys.readouterr().out
    assert (dst / "a.mp4").stat().st_mtime_ns == mtime  # resumed: finished outputs untouched
