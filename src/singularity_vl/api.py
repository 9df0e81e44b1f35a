"""The library in five lines:

    import singularity_vl as sv
    model, transform, tokenizer = sv.load("msrvtt_ret/<model>" | "path/to/dir" | "release.pth", device="cuda")
    t = model.embed_text(["a dog catches a frisbee"])           # (N, D), L2-normalised
    v = model.embed_video(["clip.mp4"], num_frames=4)           # (N, D), L2-normalised
    s = model.score(["clip.mp4"], ["a dog catches a frisbee"])  # (V, T) match probability
    a = model.answer("clip.mp4", "what is the dog doing?", ["running", "eating"])  # QA models

`load` / `load_model` are also how the command line, the search engine and the demo open a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from singularity_vl.data.text import ReleaseTokenizer, pre_text
from singularity_vl.data.transforms import EvalTransform
from singularity_vl.models.singularity import SingularityBase, SingularityQA, SingularityRetrieval

# A video: a file (video or image), uint8 frames (T, H, W, 3) / one image (H, W, 3), or a float tensor
# (T, 3, H, W) already made by the transform.
Video = Union[str, Path, np.ndarray, torch.Tensor]  # noqa: UP007 - a runtime alias

DEFAULT_NUM_FRAMES = 4  # frames sampled per video at inference (the release's pre-training evaluation)
MAX_TEXT_LEN = 32  # the release's max_txt_l
MAX_QUESTION_LEN = 25  # the release's max_q_len


def resolve(name_or_path: str | Path, progress: bool = True) -> Path:
    """A model directory or release `.pth` on disk: the path itself when it exists, else a release model
    by name (downloaded and converted once, see `singularity_vl.zoo`)."""
    from singularity_vl import zoo

    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if zoo.split_name(str(name_or_path)) is not None:
        return zoo.resolve(str(name_or_path), progress=progress)
    raise FileNotFoundError(
        f"{name_or_path}: no such model directory or .pth file, and not a release model name"
        f" (archives: {', '.join(zoo.ARCHIVES)}; `singularity-vl models` lists them)"
    )


def load_model(
    name_or_path: str | Path,
    task: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> SingularityBase:
    """The network alone (eval mode, on `device`): our directory, a release `.pth` or a release model name,
    converted to `task` (default: its own; pretrain -> retrieval / qa as the release does). `kwargs` go
    to the release converter (`image_size`, `text_heads`; `num_frames` resizes the temporal embeddings)."""
    from singularity_vl.checkpoint.release import load_any
    from singularity_vl.devices import resolve_device

    if task not in (None, "pretrain", "retrieval", "qa"):
        raise ValueError(f"task must be 'retrieval', 'qa' or 'pretrain' (or None: the checkpoint's own), got {task!r}")
    dev = resolve_device(device)
    model = load_any(resolve(name_or_path, progress), task=task, **kwargs)
    return model.to(dev).eval()


class VideoTransform:
    """A video file, frames or an image -> the model's input (T, 3, H, W): `num_frames` frames sampled in
    the middle of equal segments, squashed to the model's resolution, BEiT-normalised (the release's
    test-time pipeline)."""

    def __init__(self, image_size: int, num_frames: int = DEFAULT_NUM_FRAMES, sample: str = "middle") -> None:
        self.image_size = image_size
        self.num_frames = num_frames
        self.sample = sample
        self._eval = EvalTransform(image_size)

    def __call__(self, video: Video, num_frames: int | None = None) -> torch.Tensor:
        if isinstance(video, str | Path):
            from singularity_vl.data.video_reader import read_clip

            frames = read_clip(video, num_frames or self.num_frames, self.sample).frames
            return self._eval(frames)
        if isinstance(video, torch.Tensor) and video.is_floating_point():
            if video.ndim == 3:
                video = video[None]
            if video.ndim != 4 or video.shape[1] != 3:
                raise ValueError(f"a float video tensor must be (T, 3, H, W), got {tuple(video.shape)}")
            return video
        frames = np.asarray(video)
        if frames.ndim == 3:  # one image
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (T, H, W, 3) or (H, W, 3), got {frames.dtype} {frames.shape}")
        return self._eval(frames)


def _as_list(x: Any) -> list:
    """One item or a sequence of items -> a list (a 4-d or 5-d array counts as one video / a batch)."""
    if isinstance(x, str | Path):
        return [x]
    if isinstance(x, np.ndarray | torch.Tensor):
        return list(x) if x.ndim == 5 else [x]
    return list(x)


class SingularityVL(nn.Module):
    """A loaded model with what it needs to read text and video: `embed_text`, `embed_video`, `score`
    (retrieval / pre-training models) and `answer` (QA models). The network is `model.network`."""

    def __init__(self, network: SingularityBase, transform: VideoTransform, tokenizer: ReleaseTokenizer) -> None:
        super().__init__()
        self.network = network
        self.transform = transform
        self.tokenizer = tokenizer

    @property
    def config(self):
        return self.network.config

    @property
    def task(self) -> str:
        return self.network.config.task

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def _need(self, cls: type, what: str) -> Any:
        if not isinstance(self.network, cls):
            hint = "task='qa'" if cls is SingularityQA else "task='retrieval'"
            raise TypeError(f"{what} needs a {cls.__name__} model; this is a {self.task!r} model (load it with {hint})")
        return self.network

    def _texts(self, texts: str | Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        enc = self.tokenizer([pre_text(t) for t in texts], max_length, pad_to_longest=True)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _videos(self, videos: Video | Sequence[Video], num_frames: int | None) -> torch.Tensor:
        clips = [self.transform(v, num_frames) for v in _as_list(videos)]
        if len({c.shape for c in clips}) > 1:
            raise ValueError(f"videos of different shapes in one call: {sorted({tuple(c.shape) for c in clips})}")
        return torch.stack(clips).to(self.device)  # (B, T, 3, H, W)

    @torch.no_grad()
    def embed_text(self, texts: str | Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """(N, D) L2-normalised text embeddings (the release's caption cleaning applied first)."""
        net = self._need(SingularityRetrieval, "embed_text")
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = []
        for start in range(0, len(texts), batch_size):
            enc = self._texts(texts[start : start + batch_size], MAX_TEXT_LEN)
            _, cls = net.encode_text(enc["input_ids"], enc["attention_mask"])
            out.append(net.text_features(cls).float())
        return torch.cat(out) if out else torch.zeros(0, self.config.embed_dim)

    @torch.no_grad()
    def embed_video(
        self,
        videos: Video | Sequence[Video],
        num_frames: int | None = None,
        per_frame: bool = False,
        batch_size: int = 16,
    ) -> torch.Tensor:
        """(N, D) L2-normalised video embeddings: the mean of the per-frame embeddings, normalised again
        (`per_frame=True`: the (N, T, D) per-frame embeddings the release averages similarities over)."""
        net = self._need(SingularityRetrieval, "embed_video")
        items = _as_list(videos)
        out = []
        for start in range(0, len(items), batch_size):
            enc = net.encode_video(self._videos(items[start : start + batch_size], num_frames))
            out.append(net.video_features(enc.pooled).float())  # (B, T, D)
        if not out:
            return torch.zeros(0, self.config.embed_dim)
        feats = torch.cat(out)
        return feats if per_frame else nn.functional.normalize(feats.mean(1), dim=-1)

    @torch.no_grad()
    def score(
        self, videos: Video | Sequence[Video], texts: str | Sequence[str], num_frames: int | None = None
    ) -> torch.Tensor:
        """(V, T) probability that each text describes each video, from the cross-attention match head
        (ITM) over all frames at once: slower than comparing embeddings, and more accurate."""
        net = self._need(SingularityRetrieval, "score")
        enc = self._texts(texts, MAX_TEXT_LEN)
        text_tokens, _ = net.encode_text(enc["input_ids"], enc["attention_mask"])
        n_text = text_tokens.shape[0]
        rows = []
        for item in _as_list(videos):
            video_tokens = net.encode_video(self._videos([item], num_frames)).tokens  # (1, T*L, D)
            logits = net.match_logits(
                text_tokens, enc["attention_mask"], video_tokens.expand(n_text, -1, -1), cls_only=True
            )
            rows.append(logits.float().softmax(-1)[:, 1])
        return torch.stack(rows) if rows else torch.zeros(0, n_text)

    @torch.no_grad()
    def answer(
        self,
        video: Video,
        question: str,
        answer_list: Sequence[str],
        num_frames: int | None = None,
        top_k: int | None = None,
    ) -> str | list[tuple[str, float]]:
        """The best answer from `answer_list` (the release's ranking: first-token probability, then the
        top candidates decoded in full); with `top_k`, the `top_k` best as (answer, probability)."""
        net = self._need(SingularityQA, "answer")
        answers = list(answer_list)
        if not answers:
            raise ValueError("answer_list is empty")
        q = self._texts([question], MAX_QUESTION_LEN)
        # answers are tokenised as written, as the release does (only the question is cleaned)
        a = self.tokenizer([f"{ans} [SEP]" for ans in answers], MAX_TEXT_LEN, pad_to_longest=True)
        ranking = net.rank_answers(
            self._videos([video], num_frames),
            q["input_ids"],
            q["attention_mask"],
            a["input_ids"].to(self.device),
            a["attention_mask"].to(self.device),
            k=min(128, len(answers)),
        )
        ids, probs = ranking.topk_ids[0].tolist(), ranking.topk_probs[0].float().tolist()
        if top_k is None:
            return answers[ids[0]]
        return [(answers[i], p) for i, p in zip(ids[:top_k], probs[:top_k], strict=True)]


def load(
    name_or_path: str | Path,
    task: str | None = None,
    device: str | torch.device | None = None,
    num_frames: int = DEFAULT_NUM_FRAMES,
    tokenizer: str | Path | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> tuple[SingularityVL, VideoTransform, ReleaseTokenizer]:
    """(model, transform, tokenizer) from our directory, a release `.pth`, or a release model name
    (`singularity-vl models`), on `device` (default: `cuda` when available, else `cpu`).

    `task`: "retrieval" (embeddings, scores), "qa" (answers) or "pretrain"; default the checkpoint's own.
    `num_frames`: frames sampled per video file by the transform. `tokenizer`: a vocab.txt or tokenizer
    directory (default: the bert-base-uncased vocabulary that ships with the package). Other keyword
    arguments go to the release converter (`image_size`, `text_heads`)."""
    network = load_model(name_or_path, task=task, device=device, progress=progress, **kwargs)
    transform = VideoTransform(network.config.vision.image_size, num_frames)
    tok = ReleaseTokenizer(tokenizer)
    return SingularityVL(network, transform, tok), transform, tok
