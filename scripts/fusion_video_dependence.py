"""How much a model's fused [CLS] (what the ITM head reads) depends on the video and on the text, over the
demo's 12 template captions x the first 24 template test videos: the spread over videos for a fixed text,
the spread over texts for a fixed video, and the spread of the ITM logit difference. A template run whose
spread over videos falls near 0 has stopped looking at the video (its ITM sits at the prior).

    python scripts/fusion_video_dependence.py MODEL_DIR[,MODEL_DIR ...] CORPUS_DIR [FRAMES]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from singularity_vl.data.annotations import load_retrieval_eval
from singularity_vl.data.synthetic import CorpusFiles
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.eval.run import EvalConfig, encode_media, encode_text_list
from singularity_vl.models.singularity import SingularityBase

VIDEOS = 24


@torch.no_grad()
def spreads(model: SingularityBase, corpus: Path, frames: int) -> dict[str, float]:
    """Mean per-dimension std of the fused [CLS] over videos (text fixed) and over texts (video fixed)."""
    spec = CorpusFiles(corpus).test_spec("template")
    ev = load_retrieval_eval(spec, multi_video_gt=True)
    texts = encode_text_list(model, ReleaseTokenizer(), ev.texts, 16)
    cfg = EvalConfig(test_file=spec, num_frames_test=frames, batch_size=32)
    videos = encode_media(model, ev.media[:VIDEOS], cfg, model.config.vision.image_size, progress=False)
    n_t = len(ev.texts)
    fused = model.text_encoder(
        hidden_states=texts.tokens.repeat_interleave(VIDEOS, 0),
        attention_mask=texts.mask.repeat_interleave(VIDEOS, 0),
        encoder_hidden_states=model.fuse_frames(videos.frame_tokens).repeat(n_t, 1, 1),
        mode="fusion",
    )
    cls = fused[:, 0]
    logits = model.itm_head(cls)
    grid = cls.view(n_t, VIDEOS, -1)
    return {
        "over_videos": grid.std(1).mean().item(),
        "over_texts": grid.std(0).mean().item(),
        "itm_logit_diff_std": (logits[:, 1] - logits[:, 0]).std().item(),
    }


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    for path in sys.argv[1].split(","):
        s = spreads(SingularityBase.from_pretrained(path).eval(), Path(sys.argv[2]), frames)
        print(
            f"{path}: fused [CLS] spread over videos {s['over_videos']:.3f}, over texts {s['over_texts']:.3f};"
            f" ITM logit difference spread {s['itm_logit_diff_std']:.3f}"
        )


if __name__ == "__main__":
    main()
