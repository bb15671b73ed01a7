"""Tokenizer: same ids as transformers' own tokenizer and SentencePiece, bucketed int32 batches."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ALBERT_TOKENIZER, MINILM, save_roberta_tokenizer, shared_path
from elbert_jax import load_tokenizer

TEXTS = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007.",
    "The company's net sales fell by 5% -- analysts had expected growth.",
    "Nokia",
    "Héllo wörld, naïve café!  Multiple   spaces\tand tabs.",
    "",
]


@pytest.fixture(params=["albert", "minilm"])
def folder(request):
    return shared_path(ALBERT_TOKENIZER if request.param == "albert" else MINILM)


def test_same_ids_as_transformers(folder):
    import transformers

    ours = load_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    batch = ours(TEXTS, max_length=64)
    for row, text in enumerate(TEXTS):
        expected = theirs(text, truncation=True, max_length=64)["input_ids"]
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :n].tolist() == expected
        assert (batch["input_ids"][row, n:] == ours.pad_token_id).all()


def test_roberta_byte_level_bpe_as_transformers(tmp_path):
    """RoBERTa's kind: byte-level BPE, pairs as <s> A </s></s> B </s>, padding id 1; ids and
    truncation flags as transformers gives them, singles and pairs cut longest first."""
    import transformers

    folder = save_roberta_tokenizer(tmp_path)
    ours = load_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert ours.pad_token_id == 1 and ours._backend(64) is not None  # the Rust path
    pairs = list(reversed(TEXTS))
    for pair in (None, pairs):  # batched, as ours is (one "" pair is then a pair, not None)
        full = [len(ids) for ids in theirs(TEXTS, pair)["input_ids"]]
        for max_length in (16, 64):
            batch = ours(TEXTS, pair, max_length=max_length)
            expected = theirs(TEXTS, pair, truncation=True, max_length=max_length)["input_ids"]
            for row, ids in enumerate(expected):
                n = int(batch["attention_mask"][row].sum())
                assert batch["input_ids"][row, :n].tolist() == ids
                assert (batch["input_ids"][row, n:] == 1).all()
            assert batch["truncated"].tolist() == [n > max_length for n in full]
            assert batch["truncated"].any() and not batch["truncated"].all()


def test_albert_ids_match_sentencepiece():
    """Independent of transformers: [CLS] + pieces of the lower-cased text + [SEP].

    (transformers 5 splits a digit after punctuation differently from SentencePiece, e.g. "13.1"
    -> "_13 . _1" vs "_13 . 1"; we follow transformers, which the other tests pin down.)
    """
    import sentencepiece as spm

    folder = shared_path(ALBERT_TOKENIZER)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    ours = load_tokenizer(folder)
    texts = ["operating profit rose to eur 13 mn.", "shares of the bank fell sharply today!"]
    batch = ours([t.upper() for t in texts])
    for row, text in enumerate(texts):
        expected = [sp.piece_to_id("[CLS]")] + sp.encode(text) + [sp.piece_to_id("[SEP]")]
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :n].tolist() == expected


def test_pairs_truncation_and_buckets(folder):
    import transformers

    ours = load_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    long = " ".join(["profit"] * 200)
    batch = ours([TEXTS[0], long], pairs=[TEXTS[1], "short"], max_length=48)
    assert batch["input_ids"].shape == (2, 48) and batch["input_ids"].dtype == np.int32
    for row, (a, b) in enumerate([(TEXTS[0], TEXTS[1]), (long, "short")]):
        ref = theirs(a, b, truncation=True, max_length=48)
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :n].tolist() == ref["input_ids"]
        if "token_type_ids" in ref:  # ALBERT's 5.x tokenizer does not return them
            assert batch["token_type_ids"][row, :n].tolist() == ref["token_type_ids"]
        sep = ref["input_ids"].index(theirs.sep_token_id)
        assert batch["token_type_ids"][row, :sep + 1].sum() == 0
        assert batch["token_type_ids"][row, sep + 1:n].all()
    short = ours(["Nokia", "up"], max_length=64)
    assert short["input_ids"].shape[1] == 16  # smallest bucket
    assert ours(["Nokia"], pad_to=24)["input_ids"].shape == (1, 24)
    np.testing.assert_array_equal(ours.lengths(["Nokia", long], max_length=48),
                                  short["attention_mask"][:1].sum(1).tolist() + [48])


@pytest.mark.parametrize("fast", [True, False], ids=["rust", "python"])
def test_truncated_rows_are_flagged(folder, fast):
    """Rows at the boundary (exactly max_length tokens, one more) decide the flag, for pairs too,
    read from the Rust encodings' overflow or (slow tokenizers) by re-encoding."""
    import transformers

    ours = load_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    if not fast:  # what a tokenizer without Rust encodings returns (no pairs: those need them)
        ours.hf = _through_transformers_call(ours.hf, keep_encodings=False)
    texts = [" ".join(["profit"] * k) for k in range(10, 20)] + ["", TEXTS[0]]
    pairs = ["short"] * len(texts)
    for pair in (None, pairs) if fast else (None,):
        full = [len(theirs(t, p)["input_ids"]) for t, p in zip(texts, pair or [None] * len(texts))]
        for max_length in (16, 20):
            batch = ours(texts, pair, max_length=max_length)
            assert batch["truncated"].dtype == bool
            assert batch["truncated"].tolist() == [n > max_length for n in full]
            assert {n - max_length for n in full} >= {0, 1}  # both sides of the boundary seen


def _through_transformers_call(hf, keep_encodings: bool = True):
    """``hf`` as a tokenizer that ``Tokenizer`` does not treat as fast, so every batch goes through
    ``hf(...)``; without its Rust encodings it returns what a slow (Python) tokenizer does."""
    from transformers import BatchEncoding

    class ThroughCall:
        is_fast = False

        def __getattr__(self, name):
            return getattr(hf, name)

        def __call__(self, *args, **kwargs):
            out = hf(*args, **kwargs)
            return out if keep_encodings else BatchEncoding(dict(out))

    return ThroughCall()


def test_single_string_is_refused(folder):
    with pytest.raises(TypeError, match="list of texts"):
        load_tokenizer(folder)("just one")


def test_rust_backend_path_equals_transformers_call(folder):
    """The direct Rust path (a private backend copy) gives exactly what transformers' own
    ``__call__`` gives, on awkward texts: special tokens written in the text, unicode, control
    characters, whitespace only, rows cut at the boundary, pairs cut longest first."""
    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ019 .,;-'\"%$€éüß中文\t\n") + ["[SEP]", "[CLS]", "<unk>", "[MASK]", " ",
                                                        "profit", "\u200b", "\x00", "\x85"]
    texts = TEXTS + ["   ", "\n"] + ["".join(rng.choice(alphabet, size=int(rng.integers(0, 60))))
                                      for _ in range(60)]
    pairs = list(reversed(texts))
    fast = load_tokenizer(folder)
    reference = load_tokenizer(folder)
    reference.hf = _through_transformers_call(reference.hf)
    for pair in (None, pairs):
        for max_length in (16, 64):
            ours = fast(texts, pair, max_length=max_length)
            theirs = reference(texts, pair, max_length=max_length)
            assert ours.keys() == theirs.keys()
            for name in ours:
                np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
                assert ours[name].dtype == theirs[name].dtype


def test_a_tokenizer_that_rewrites_texts_goes_through_transformers(folder):
    """A tokenizer class that overrides a method between ``__call__`` and the backend may change
    the texts in Python: ``Tokenizer`` then calls it, not the backend, and sees the change."""
    ours = load_tokenizer(folder)
    plain = ours(TEXTS, max_length=64)

    class Shouting(type(ours.hf)):
        def _encode_plus(self, text, *args, **kwargs):
            return super()._encode_plus([t.upper() + " profit" for t in text], *args, **kwargs)

    ours.hf.__class__ = Shouting
    ours.hf = ours.hf  # drops the cached backends
    assert ours._backend(64) is None
    shouted = ours(TEXTS, max_length=64)
    assert (shouted["attention_mask"].sum(1) > plain["attention_mask"].sum(1)).all()
