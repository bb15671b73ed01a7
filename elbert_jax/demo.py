"""The offline quickstart's data and tokenizer, made here from nothing: no download, seconds to build.

Sentences come from templates written for this project: a company, a metric, a movement and a
period. The movement carries the sign (profit "rose", costs "soared" or "were cut"); a third of
the polar sentences
carry an explicit cue instead ("profit warning", "record results"): the easy cases an early exit
should catch. Neutral sentences state facts.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from elbert_jax.data import PHRASEBANK_LABELS, TextSet

COMPANIES = ["Nokia", "Fiskars", "Kone", "Stora Enso", "Outotec", "Wartsila", "Elisa", "Orion",
             "Sampo", "Metso", "the company", "the group", "the bank", "the retailer", "the insurer"]
GOOD_WHEN_UP = ["net sales", "operating profit", "revenue", "order intake", "earnings per share",
                "net profit", "market share", "gross margin", "dividend", "cash flow"]
GOOD_WHEN_DOWN = ["costs", "operating loss", "net debt", "losses", "expenses", "staff costs",
                  "cost of sales", "impairment charges", "net loss", "interest costs"]
UP = ["rose", "increased", "grew", "climbed", "jumped", "improved", "went up", "surged"]
DOWN = ["fell", "decreased", "declined", "dropped", "slumped", "went down", "shrank", "slipped"]
# costs and losses move with verbs of their own, so the verb carries the sign of the news
BAD_UP = ["soared", "ballooned", "widened", "escalated", "spiralled", "mounted"]
GOOD_DOWN = ["were cut", "were reduced", "were trimmed", "narrowed", "eased", "were halved"]
PERIODS = ["in the first quarter", "in 2008", "year-on-year", "in the third quarter of 2009",
           "from the previous year", "in January-June", "compared with a year earlier", "last year"]
AMOUNTS = ["by 5 %", "by 12.3 %", "to EUR 4.2 mn", "to EUR 131 mn", "by 0.8 %", "by a third",
           "to USD 17 million", "sharply", "slightly", "by EUR 2 mn"]
NEUTRAL = [
    "{c} will publish its interim report on {d}.",
    "{c} is headquartered in Helsinki and employs about {n} people.",
    "The annual general meeting of {c} will be held {p}.",
    "{c} operates in {n} countries through its subsidiaries.",
    "The shares of {c} are listed on the Helsinki stock exchange.",
    "{c} appointed a new chief financial officer {p}.",
    "The agreement between {c} and its partner was signed {p}.",
    "{c} reported {m} of EUR {n} mn {p}.",
]
CUES = {  # explicit sentiment: the easy cases an early exit should catch
    "positive": ["{c} reported record results {p}.", "{c} posted strong growth {p}.",
                 "{c} beat market expectations {p}.", "Analysts upgraded {c} after an excellent quarter."],
    "negative": ["{c} issued a profit warning {p}.", "{c} reported disappointing results {p}.",
                 "{c} will cut jobs after weak demand {p}.", "Analysts downgraded {c} after a poor quarter."],
}
DATES = ["Monday", "April 24", "the 3rd of August", "Thursday", "October 15"]


def make_sentences(n: int, seed: int = 0) -> TextSet:
    """``n`` labelled sentences (negative/neutral/positive), a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    texts, labels = [], []
    for _ in range(n):
        kind = rng.integers(3)
        company = pick(COMPANIES)
        if kind < 2 and rng.random() < 0.3:
            label = PHRASEBANK_LABELS[2 * kind]
            text = pick(CUES[label]).format(c=company, p=pick(PERIODS))
        elif kind == 2:
            text = pick(NEUTRAL).format(c=company, d=pick(DATES), n=int(rng.integers(2, 9000)),
                                        p=pick(PERIODS), m=pick(GOOD_WHEN_UP + GOOD_WHEN_DOWN))
            label = "neutral"
        else:
            good_up = rng.random() < 0.5
            metric = pick(GOOD_WHEN_UP if good_up else GOOD_WHEN_DOWN)
            up = rng.random() < 0.5
            verbs = (UP if up else DOWN) if good_up else (BAD_UP if up else GOOD_DOWN)
            text = f"{company}'s {metric} {pick(verbs)} {pick(AMOUNTS)} {pick(PERIODS)}."
            label = "positive" if up == good_up else "negative"
        texts.append(text[0].upper() + text[1:])
        labels.append(PHRASEBANK_LABELS.index(label))
    return TextSet(texts, np.array(labels, np.int32))


def train_tokenizer(texts: list[str], folder: str | Path, vocab_size: int = 600) -> Path:
    """A lower-cased WordPiece tokenizer built from ``texts``, saved as a transformers folder.

    The vocabulary is deterministic (unlike ``tokenizers``' trainer, whose tie-breaking varies
    from run to run): the ``vocab_size`` most frequent words, ties broken alphabetically, plus
    every character seen, alone and as a ``##`` continuation, so no word maps to [UNK].
    """
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for text in texts
                    for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    frequent = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))]
    pieces = list(dict.fromkeys(special + chars + ["##" + c for c in chars] + frequent))
    vocab = {piece: i for i, piece in enumerate(pieces[:max(vocab_size, len(special) + 2 * len(chars))])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    fast.save_pretrained(folder)
    return Path(folder)
