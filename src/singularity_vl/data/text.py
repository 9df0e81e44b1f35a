"""Caption cleaning and tokenisation exactly as the release does them."""

from __future__ import annotations

import re
from pathlib import Path

import torch

_PUNCT = re.compile(r"([,.'!?\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


def pre_text(text: str, max_words: int | None = None) -> str:
    """The release's `pre_text`: lower-case; drop , . ' ! ? " ( ) * # : ; ~; '-' and '/' -> space;
    `<person>` -> person; collapse spaces; keep at most `max_words` words."""
    text = _PUNCT.sub("", text.lower())
    text = text.replace("-", " ").replace("/", " ").replace("<person>", "person")
    text = _SPACES.sub(" ", text).rstrip("\n").strip(" ")
    if max_words:
        words = text.split(" ")
        if len(words) > max_words:
            text = " ".join(words[:max_words])
    return text


VOCAB_FILE = Path(__file__).parent / "vocab" / "bert-base-uncased-vocab.txt"


def default_vocab() -> Path:
    """The bert-base-uncased `vocab.txt` that ships inside the package (see data/vocab/NOTICE.md)."""
    return VOCAB_FILE


class ReleaseTokenizer:
    """bert-base-uncased WordPiece encoding `[CLS] w1 ... wn` with NO trailing `[SEP]`, padded with 0:
    the ids the release's own tokenizer class produces (Hugging Face's would append `[SEP]`)."""

    def __init__(self, path: str | Path | None = None) -> None:
        from transformers import AutoTokenizer

        path = Path(path) if path is not None else default_vocab()
        if path.is_file():  # a bare vocab.txt
            from transformers import BertTokenizer

            vocab = {line.rstrip("\n"): i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines())}
            self.tok = BertTokenizer(vocab=vocab, do_lower_case=True)
        elif path.is_dir():
            self.tok = AutoTokenizer.from_pretrained(str(path))
        else:
            raise FileNotFoundError(f"tokenizer: {path} is neither a vocab.txt nor a tokenizer directory")
        self.cls_token_id = self.tok.cls_token_id
        self.sep_token_id = self.tok.sep_token_id
        self.pad_token_id = self.tok.pad_token_id
        self.mask_token_id = self.tok.mask_token_id
        self.vocab_size = len(self.tok)

    def encode(self, text: str, max_length: int) -> list[int]:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return [self.cls_token_id] + ids[: max_length - 1]

    def __call__(
        self, texts: str | list[str], max_length: int = 32, pad_to_longest: bool = False
    ) -> dict[str, torch.Tensor]:
        """{"input_ids", "attention_mask"} (B, L) int64, truncated to `max_length` tokens and padded to
        L = `max_length` (the release) or, with `pad_to_longest`, to the longest text of the batch: the
        same attention and losses, fewer padded positions to compute. A single string is a batch of one."""
        if isinstance(texts, str):
            texts = [texts]
        encoded = [self.encode(text, max_length) for text in texts]
        length = max((len(e) for e in encoded), default=1) if pad_to_longest else max_length
        ids = torch.full((len(texts), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), length), dtype=torch.long)
        for row, enc in enumerate(encoded):
            ids[row, : len(enc)] = torch.tensor(enc)
            mask[row, : len(enc)] = 1
        return {"input_ids": ids, "attention_mask": mask}
