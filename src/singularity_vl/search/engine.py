"""Query an index: dual-encoder similarity over every indexed file, then ITM re-ranking of the top
candidates from their cached frame tokens (the fusion inputs), with the best-matching frame's time.

Re-ranking reads and scores the candidates `RERANK_CHUNK` at a time, so its memory does not grow with
`rerank` (256 candidates of 8 frames of a `base` model would otherwise hold ~1.2 GB of tokens at once)."""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from singularity_vl.api import load_model
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.devices import model_device, to_device
from singularity_vl.models.losses import ENSEMBLES, pool_frames
from singularity_vl.models.singularity import SingularityBase
from singularity_vl.search.index import DB_NAME, SHARD_DIR, SearchIndexError, model_fingerprint, open_snapshot

MAX_QUERY_CHARS = 200
MAX_K = 50
MAX_RERANK = 256
RERANK_CHUNK = 16  # candidates whose frame tokens are in memory at once while re-ranking


@dataclass
class Hit:
    """One result: the file, its score (ITM match logit, or cosine without re-ranking) and the sampled
    frame that matches best, with its time in seconds."""

    id: int
    path: str
    score: float
    itc_score: float
    frame: int
    time: float
    duration: float


def _read_index(db) -> tuple[tuple[dict, list, int], set[str]]:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    rows = db.execute(
        "SELECT id, path, duration, timestamps, shard, tensor_key, frame_indices FROM media"
        " WHERE status = 'ok' ORDER BY id"
    ).fetchall()
    num_failed = db.execute("SELECT COUNT(*) FROM media WHERE status = 'error'").fetchone()[0]
    return (meta, rows, num_failed), {r[4] for r in rows}


class SearchEngine:
    """An opened index with its model; `search` is thread-safe. The engine reads the index as it was
    when opened (a snapshot): the shards it refers to are registered as in use, so an indexer running
    meanwhile keeps them until the engine is closed (`close`, or garbage collection)."""

    def __init__(
        self,
        index_dir: str | Path,
        model: SingularityBase | None = None,
        *,
        previous: SearchEngine | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        """Open `index_dir` with `model` (default: the index's own model directory, checked to be unchanged,
        loaded on `device` (default: a GPU when there is one); or `previous`'s model, on its device, when
        that engine was opened on the same weights). Queries and re-ranking run on the model's device."""
        self.index_dir = Path(index_dir)
        self._finalizer = None
        if not (self.index_dir / DB_NAME).is_file():
            raise SearchIndexError(f"{index_dir}: no {DB_NAME} (build it with `singularity-vl index`)")
        (self.meta, rows, self.num_failed), registration = open_snapshot(self.index_dir, _read_index)
        if registration is not None:
            self._finalizer = weakref.finalize(self, registration.close)
        try:
            self.generation = self.meta.get("generation", "")
            self.root = Path(self.meta["root"])
            same_weights = previous is not None and all(
                previous.meta.get(key) == self.meta.get(key) for key in ("model", "model_fingerprint")
            )
            if model is None and same_weights:
                model = previous.model
            if model is None:
                model_dir = Path(self.meta["model"])
                if not model_dir.is_dir():
                    raise SearchIndexError(f"{model_dir}: the index's model directory is gone")
                if model_fingerprint(model_dir) != self.meta["model_fingerprint"]:
                    raise SearchIndexError(f"{model_dir}: the model changed since indexing; re-index with --rebuild")
                model = load_model(model_dir, device=device)
            self.model = model.eval()
            self.device = model_device(self.model)
            self.tokenizer = previous.tokenizer if previous is not None else ReleaseTokenizer()
            self.ids = [r[0] for r in rows]
            self.paths = [r[1] for r in rows]
            self.durations = [r[2] or 0.0 for r in rows]
            self.timestamps = [json.loads(r[3]) for r in rows]
            self.locations = [(r[4], r[5]) for r in rows]
            self.frame_indices = [json.loads(r[6]) for r in rows]
            self.by_id = {r[0]: i for i, r in enumerate(rows)}
            feats = self._load("feats", range(len(rows))) if rows else torch.zeros(0, 1, 1)
            self.feats = feats.to(self.device)
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the snapshot (its shards may then be deleted by the next indexer run)."""
        if self._finalizer is not None:
            self._finalizer()

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, kind: str, rows) -> torch.Tensor:
        """Stack tensor `kind` of the given rows, reading each shard once."""
        by_shard: dict[str, list[tuple[int, str]]] = {}
        for pos, row in enumerate(rows):
            shard, key = self.locations[row]
            by_shard.setdefault(shard, []).append((pos, key))
        out: list[torch.Tensor | None] = [None] * len(rows)
        for shard, items in by_shard.items():
            with safe_open(str(self.index_dir / SHARD_DIR / shard), framework="pt") as f:
                for pos, key in items:
                    out[pos] = f.get_tensor(f"{key}.{kind}").float()
        return torch.stack(out)

    def path_of(self, media_id: int) -> Path | None:
        """Absolute path of an indexed file by id (None when not in the index)."""
        row = self.by_id.get(media_id)
        return None if row is None else self.root / self.paths[row]

    @torch.no_grad()
    def search(self, query: str, k: int = 10, rerank: int = 64, ensemble: str = "concat") -> list[Hit]:
        query = " ".join(str(query).split())
        if not query:
            raise ValueError("the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise ValueError(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}")
        if not 0 <= rerank <= MAX_RERANK:
            raise ValueError(f"rerank must be between 0 and {MAX_RERANK}")
        if ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}")
        if not self.ids:
            return []
        with self._lock:
            return self._search(query, k, rerank, ensemble)

    def _search(self, query: str, k: int, rerank: int, ensemble: str) -> list[Hit]:
        m = self.model
        enc = to_device(self.tokenizer([query], 32), self.device)
        tokens, cls = m.encode_text(enc["input_ids"], enc["attention_mask"])
        text_feat = m.text_features(cls)[0]
        per_frame_sim = self.feats @ text_feat  # (N, T)
        sim = per_frame_sim.mean(1)
        n_cand = min(max(rerank, k) if rerank else k, len(self.ids))
        cand = sim.topk(n_cand).indices
        if not rerank:
            frames = per_frame_sim[cand].argmax(1)
            return [self._hit(int(c), float(sim[c]), float(sim[c]), int(f)) for c, f in zip(cand, frames, strict=True)]
        mask = enc["attention_mask"]
        # the first fusion layer's self-attention reads the query alone, so it runs once
        tokens = m.text_encoder.first_self_attention(tokens, mask)
        cand_rows = cand.tolist()
        per_frame_parts, score_parts = [], []
        for start in range(0, len(cand_rows), RERANK_CHUNK):
            pf, sc = self._rerank_chunk(tokens, mask, cand_rows[start : start + RERANK_CHUNK], ensemble)
            per_frame_parts.append(pf)
            score_parts.append(sc)
        per_frame, scores = torch.cat(per_frame_parts), torch.cat(score_parts)
        order = scores.argsort(descending=True)[:k]
        best = per_frame.argmax(1)
        return [self._hit(int(cand[i]), float(scores[i]), float(sim[cand[i]]), int(best[i])) for i in order]

    def _rerank_chunk(
        self, tokens: torch.Tensor, mask: torch.Tensor, rows: list[int], ensemble: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame ITM logits (C, T) of the candidate `rows` (which frame matches, and the late-fusion
        ensembles) and their scores (C,) under `ensemble`."""
        m = self.model
        frame_tokens = self._load("frame_tokens", rows).to(self.device)  # (C, T, L, D), one chunk at a time
        c, t, n, d = frame_tokens.shape
        flat = frame_tokens.reshape(c * t, n, d)
        per_frame = m.match_logits(tokens.expand(c * t, -1, -1), mask.expand(c * t, -1), flat, self_attended=True)
        per_frame = per_frame[:, 1].view(c, t)
        if ensemble == "concat":
            fused = m.fuse_frames(frame_tokens)
            scores = m.match_logits(tokens.expand(c, -1, -1), mask.expand(c, -1), fused, self_attended=True)[:, 1]
        else:
            scores = pool_frames(per_frame, ensemble)
        return per_frame, scores

    def _hit(self, row: int, score: float, itc: float, frame: int) -> Hit:
        times = self.timestamps[row]
        return Hit(
            id=self.ids[row],
            path=self.paths[row],
            score=round(score, 4),
            itc_score=round(itc, 4),
            frame=frame,
            time=float(times[min(frame, len(times) - 1)]) if times else 0.0,
            duration=round(self.durations[row], 3),
        )


def hits_to_json(query: str, hits: list[Hit]) -> dict:
    return {"query": query, "results": [asdict(h) for h in hits]}
