"""Tokenisation to fixed, bucketed shapes, so jit compiles a handful of programs, not one per batch."""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


class Tokenizer:
    """A transformers tokenizer that returns int32 numpy batches padded to a length bucket.

    Texts longer than ``max_length`` are truncated (pairs: longest first) and flagged in the
    ``truncated`` row mask, so callers can say how many were cut; the batch is padded to the
    smallest bucket that holds its longest row, never beyond ``max_length``.
    """

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer

    @property
    def pad_token_id(self) -> int:
        return int(self.hf.pad_token_id or 0)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def buckets(self, max_length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> list[int]:
        return sorted({b for b in buckets if b < max_length} | {max_length})

    def lengths(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                max_length: int = 64) -> np.ndarray:
        """Token counts (special tokens included, truncated) without padding: for sorting by length."""
        enc = self.hf(clean_texts(texts), clean_texts(pairs) if pairs is not None else None,
                      truncation=True, max_length=max_length, padding=False, return_attention_mask=False,
                      return_token_type_ids=False)
        return np.array([len(ids) for ids in enc["input_ids"]], np.int32)

    def __call__(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                 max_length: int = 64, buckets: Sequence[int] = DEFAULT_BUCKETS,
                 pad_to: int | None = None) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask``, ``token_type_ids``: int32 [len(texts), bucket];
        ``truncated``: bool [len(texts)], rows that had more than ``max_length`` tokens."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        enc = self.hf(clean_texts(texts), clean_texts(pairs) if pairs is not None else None,
                      truncation=True, max_length=max_length, padding=False)
        longest = max((len(ids) for ids in enc["input_ids"]), default=1)
        if pad_to is None:
            sizes = self.buckets(max_length, buckets)
            pad_to = sizes[bisect.bisect_left(sizes, longest)]
        elif pad_to < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest row ({longest} tokens)")
        out = {name: np.zeros((len(texts), pad_to), np.int32)
               for name in ("input_ids", "attention_mask", "token_type_ids")}
        out["truncated"] = self._truncated(texts, pairs, enc, max_length)
        out["input_ids"][:] = self.pad_token_id
        for row, ids in enumerate(enc["input_ids"]):
            out["input_ids"][row, :len(ids)] = ids
            out["attention_mask"][row, :len(ids)] = 1
            if pairs is not None:
                out["token_type_ids"][row, :len(ids)] = _segments(enc.sequence_ids(row))
        return out

    def _truncated(self, texts: Sequence[str], pairs: Sequence[str] | None, enc: Any,
                   max_length: int) -> np.ndarray:
        """A fast (Rust) tokenizer keeps what truncation cut in each encoding's ``overflowing``,
        so this costs nothing; a slow one re-encodes, in full, only the rows cut to exactly
        ``max_length`` (the only ones that can have been truncated)."""
        if getattr(enc, "encodings", None) is not None:
            return np.array([bool(e.overflowing) for e in enc.encodings], bool)
        full = [row for row, row_ids in enumerate(enc["input_ids"]) if len(row_ids) >= max_length]
        mask = np.zeros(len(texts), bool)
        if full:
            again = self.hf(clean_texts([texts[i] for i in full]),
                            clean_texts([pairs[i] for i in full]) if pairs is not None else None,
                            truncation=False, padding=False, return_attention_mask=False,
                            return_token_type_ids=False, verbose=False)["input_ids"]
            mask[full] = [len(row_ids) > max_length for row_ids in again]
        return mask

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.hf.save_pretrained(folder)


def clean_texts(texts: Sequence[str]) -> list[str]:
    """Texts the Rust tokenizers accept: lone surrogates (undecodable bytes of a command line, or
    ``"\\ud800"`` in JSON) become U+FFFD instead of failing the whole batch; non-strings are refused."""
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}, not a str: {text!r:.60}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        out.append(text)
    return out


def _segments(sequence_ids: list[int | None]) -> np.ndarray:
    """BERT/ALBERT token types: 0 up to the first [SEP], 1 from the second segment to the end.

    Derived here because some transformers tokenizers (ALBERT in 5.x) no longer return them.
    """
    seq = np.array([-1 if s is None else s for s in sequence_ids])
    second = np.flatnonzero(seq == 1)
    types = np.zeros(len(seq), np.int32)
    if second.size:
        types[second[0]:] = 1
    return types


def load_tokenizer(name_or_path: str | os.PathLike) -> Tokenizer:
    """The tokenizer of a local folder or hub model (ALBERT SentencePiece, BERT WordPiece, ...)."""
    import transformers

    return Tokenizer(transformers.AutoTokenizer.from_pretrained(str(name_or_path)))
