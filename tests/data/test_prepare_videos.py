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
    rc = main(["prepare-videos", str(src), str(dst), "--fps", "2", "--size", "60", "--trim", "3", "--workers", "1"])
    assert "0 converted, 2 already done, 1 failed" in capsys.readouterr().out
    assert (dst / "a.mp4").stat().st_mtime_ns == mtime  # resumed: finished outputs untouched
    # other options would mix videos of two kinds in one folder: refused, naming both
    assert main(["prepare-videos", str(src), str(dst), "--fps", "2", "--size", "60", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{dst} holds videos made with --fps 2.0 --size 60 --trim 3.0, not --fps 2.0 --size 60" in err
    assert (dst / "a.mp4").stat().st_mtime_ns == mtime


def test_sources_sharing_an_output_are_reported_not_mixed(tmp_path, capsys):
    """`a.mp4` and `a.webm` would both become `a.mp4`: neither is converted, each failure names the other,
    and the rest of the folder is converted."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_video(src / "a.mp4", moving_square_frames(10, 48, 64), fps=10, gop=5)
    write_video(src / "a.webm", moving_square_frames(10, 48, 64), fps=10, codec="libvpx-vp9", gop=5)
    write_video(src / "sub" / "a.webm", moving_square_frames(10, 48, 64), fps=10, codec="libvpx-vp9", gop=5)
    dst = tmp_path / "dst"
    rc = main(["prepare-videos", str(src), str(dst), "--fps", "5", "--size", "32", "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 1 and "1 converted, 0 already done, 2 failed" in out
    assert f"FAILED {src / 'a.mp4'}: its output {dst / 'a.mp4'} is also the output of a.webm" in out
    assert f"FAILED {src / 'a.webm'}: its output {dst / 'a.mp4'} is also the output of a.mp4" in out
    assert not (dst / "a.mp4").exists() and (dst / "sub" / "a.mp4").is_file()  # same name, other folder: fine
    (src / "a.webm").unlink()  # the user resolves the clash; the next run converts the rest
    rc = main(["prepare-videos", str(src), str(dst), "--fps", "5", "--size", "32", "--workers", "1"])
    assert rc == 0 and "1 converted, 1 already done, 0 failed" in capsys.readouterr().out
    assert not (dst / "prepare_failures.json").exists()  # the earlier run's failures no longer stand


def test_output_inside_or_equal_to_the_source_folder(tmp_path, capsys):
    src = tmp_path / "videos"
    src.mkdir()
    write_video(src / "clip.mp4", moving_square_frames(10, 48, 64), fps=10, gop=5)
    assert main(["prepare-videos", str(src), str(src), "--workers", "1"]) == 2
    assert "must not be the source folder" in capsys.readouterr().err
    small = src / "small"  # outputs (and their temporary files) under the source are never sources
    for _ in range(2):
        assert main(["prepare-videos", str(src), str(small), "--fps", "5", "--size", "32", "--workers", "1"]) == 0
    assert "0 converted, 1 already done, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in small.rglob("*")) == ["clip.mp4", "prepare_settings.json"]


def test_debug_keeps_the_traceback(tmp_path, capsys, monkeypatch):
    """An error is one line naming the problem; `--debug` (or SINGULARITY_VL_DEBUG=1) adds where it came from."""
    src = tmp_path / "videos"
    src.mkdir()
    monkeypatch.delenv("SINGULARITY_VL_DEBUG", raising=False)
    assert main(["prepare-videos", str(src), str(src)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().endswith("(--debug shows where)")
    assert main(["--debug", "prepare-videos", str(src), str(src)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "in plan_outputs" in err and "must not be the source folder" in err
    assert main(["prepare-videos", str(src), str(src), "--debug"]) == 2  # after the command too
    assert "in plan_outputs" in capsys.readouterr().err
    monkeypatch.setenv("SINGULARITY_VL_DEBUG", "1")
    assert main(["prepare-videos", str(src), str(src)]) == 2
    assert "in plan_outputs" in capsys.readouterr().err
