"""Tokenisation to fixed, bucketed shapes, so jit compiles a handful of programs, not one per batch."""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from elbert_jax.data import bucket_for

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
    def hf(self) -> Any:
        return self._hf

    @hf.setter
    def hf(self, hf_tokenizer: Any) -> None:
        self._hf = hf_tokenizer
        self._backends: dict[int, Any] = {}

    def _backend(self, max_length: int) -> Any:
        """A private copy of a fast tokenizer's Rust backend that truncates at ``max_length`` as
        transformers' ``__call__`` would (longest first, its side and special-token settings), or
        None for a slow tokenizer. Calling it directly skips transformers' per-call set-up and
        its conversion of every row to Python lists (about half the time of a batch), and a copy
        that is never reconfigured can encode in one thread while another uses ``hf``."""
        if not _calls_its_backend_plainly(self.hf):
            return None
        backend = self._backends.get(max_length)
        if backend is None:
            backend = copy.deepcopy(self.hf.backend_tokenizer)
            backend.no_padding()
            backend.enable_truncation(max_length, stride=0, strategy="longest_first",
                                      direction=self.hf.truncation_side)
            backend.encode_special_tokens = bool(getattr(self.hf, "split_special_tokens", False))
            self._backends[max_length] = backend
        return backend

    def _encode(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int
                ) -> tuple[list[list[int]], np.ndarray, list[np.ndarray] | None]:
        """Token ids of every row (truncated, special tokens included), the ``truncated`` mask and,
        for pairs, every row's token types."""
        texts = clean_texts(texts)
        pairs = clean_texts(pairs) if pairs is not None else None
        backend = self._backend(max_length)
        if backend is not None:
            encodings = backend.encode_batch(list(zip(texts, pairs)) if pairs is not None else texts)
            truncated = np.fromiter((bool(e.overflowing) for e in encodings), bool, len(encodings))
            types = ([_segments(e.sequence_ids) for e in encodings] if pairs is not None else None)
            return [e.ids for e in encodings], truncated, types
        enc = self.hf(texts, pairs, truncation=True, max_length=max_length, padding=False)
        types = ([_segments(enc.sequence_ids(row)) for row in range(len(texts))]
                 if pairs is not None else None)
        return enc["input_ids"], self._truncated(texts, pairs, enc, max_length), types

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
        return np.array([len(ids) for ids in self._encode(texts, pairs, max_length)[0]], np.int32)

    def __call__(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                 max_length: int = 64, buckets: Sequence[int] = DEFAULT_BUCKETS,
                 pad_to: int | None = None) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask``, ``token_type_ids``: int32 [len(texts), bucket];
        ``truncated``: bool [len(texts)], rows that had more than ``max_length`` tokens."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        ids, truncated, types = self._encode(texts, pairs, max_length)
        lengths = np.fromiter(map(len, ids), np.int32, len(ids))
        longest = int(lengths.max(initial=1))
        if pad_to is None:
            pad_to = bucket_for(longest, self.buckets(max_length, buckets))
        elif pad_to < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest row ({longest} tokens)")
        filled = np.arange(pad_to) < lengths[:, None]  # row-major order: the ids in sequence
        out = {"input_ids": np.full((len(ids), pad_to), self.pad_token_id, np.int32),
               "attention_mask": filled.astype(np.int32),
               "token_type_ids": np.zeros((len(ids), pad_to), np.int32), "truncated": truncated}
        out["input_ids"][filled] = np.fromiter(itertools.chain.from_iterable(ids), np.int32,
                                               int(lengths.sum()))
        if types is not None:
            out["token_type_ids"][filled] = np.concatenate(types) if types else []
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


def _calls_its_backend_plainly(hf: Any) -> bool:
    """Whether ``hf(...)`` is transformers' own fast path, which sets the backend's truncation and
    calls its ``encode_batch``: a fast tokenizer whose classes override none of the methods on the
    way there (a model's tokenizer that rewrites texts in Python first is left to ``hf(...)``)."""
    import transformers

    base = transformers.PreTrainedTokenizerFast  # TokenizersBackend in transformers 5
    if not isinstance(hf, base) or not hf.is_fast:
        return False
    return all(getattr(type(hf), name, None) is getattr(base, name, None) for name in
               ("__call__", "_call_one", "encode_plus", "batch_encode_plus", "_encode_plus",
                "_batch_encode_plus", "set_truncation_and_padding"))


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
