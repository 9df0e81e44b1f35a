"""Per-query AUC of a model's ITM scores on the demo's `template` test set: how well each template caption
ranks its videos above all others (0.5 = chance), a steadier measure than R@1 over 12 queries; then, per
caption, the actions of its 8 top-ranked videos (`*`: a ground truth), which shows what outranks the right
videos.

    python scripts/template_auc.py MODEL_DIR CORPUS_DIR [FRAMES ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from singularity_vl.data.annotations import load_retrieval_eval
from singularity_vl.data.synthetic import CorpusFiles
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.eval.metrics import retrieval_metrics
from singularity_vl.eval.retrieval import rerank_ensembles
from singularity_vl.eval.run import EvalConfig, encode_media, encode_text_list
from singularity_vl.models.singularity import SingularityBase


def query_aucs(scores: np.ndarray, text_to_media: list[list[int]]) -> list[float]:
    """AUC per text row of `scores` (texts, videos): P(a ground-truth video outscores a wrong one)."""
    out = []
    for t, gt in enumerate(text_to_media):
        pos = np.zeros(scores.shape[1], bool)
        pos[gt] = True
        out.append(float((scores[t, pos][:, None] > scores[t, ~pos][None, :]).mean()))
    return out


def print_confusion(scores: torch.Tensor, texts: list[str], actions: list[str]) -> None:
    """Per caption (row), how many of its 10 top-ranked videos show each action (columns, in the order of
    the captions' own actions where known): where the ranking errors go."""
    names = sorted(set(actions), key=actions.index)
    short = [n[:6] for n in names]
    print("  top-10 videos per caption, by action: " + " ".join(f"{s:>6}" for s in short))
    for t, text in enumerate(texts):
        top = scores[t].argsort(descending=True)[:10].tolist()
        counts = [sum(actions[i] == n for i in top) for n in names]
        print(f"  {text[:38]:38} " + " ".join(f"{c:>6}" for c in counts))


def main(argv: list[str]) -> None:
    model = SingularityBase.from_pretrained(argv[0]).eval()
    files = CorpusFiles(Path(argv[1]))
    spec = files.test_spec("template")
    action = {name: v["action"] for name, v in files.videos().items()}
    ev = load_retrieval_eval(spec, multi_video_gt=True)
    with torch.no_grad():
        texts = encode_text_list(model, ReleaseTokenizer(), ev.texts, 16)
        for frames in [int(a) for a in argv[2:]] or [1, 4]:
            cfg = EvalConfig(test_file=spec, num_frames_test=frames, batch_size=32)
            videos = encode_media(model, ev.media, cfg, model.config.vision.image_size, progress=False)
            sc = rerank_ensembles(model, texts, videos, k_test=len(ev.media), ensembles=("concat",))["concat"]
            aucs = query_aucs(sc.t2v_x.numpy(), ev.text_to_media)
            m = retrieval_metrics(sc.v2t_x, sc.t2v_x, ev.text_to_media, ev.media_to_text)
            print(f"{frames} frames: t2v R@1 {m['img_r1']:.1f}, mean AUC {np.mean(aucs):.3f}")
            print("  " + ", ".join(f"{t}: {a:.2f}" for t, a in zip(ev.texts, aucs, strict=True)))
            print_confusion(sc.t2v_x, ev.texts, [action[Path(m).name] for m in ev.media])
            for t, text in enumerate(ev.texts):
                top = sc.t2v_x[t].argsort(descending=True)[:8].tolist()
                gt = set(ev.text_to_media[t])
                ranked = [("*" if i in gt else "") + action[Path(ev.media[i]).name] for i in top]
                print(f"  {text}: {' '.join(ranked)}")


if __name__ == "__main__":
    main(sys.argv[1:])
