"""Per-example metrics, each ``(prediction, references) -> float in 0..1``, as the official scorers define them.

exact_match, f1   JSQuAD as JGLUE scores it (its patch to transformers' ``squad_metrics.py``):
                  normalise = lowercase, ``rstrip("。")``, collapse whitespace (no punctuation
                  removal); F1 over the bag of characters of the normalised strings (spaces count);
                  max over golds, golds that normalise to empty dropped ([""] if none is left).
f1_mecab          the token F1 of the Japanese lm-evaluation-harness (Stability-AI ``jasquad``) that
                  the reference study reported: emoji removed, ``neologdn.normalize``, whitespace
                  collapsed (no lowercasing), MeCab ``-Owakati`` tokens, punctuation tokens dropped;
                  max over all golds. Set beside the study's numbers, not JGLUE's.
rouge1/2/L        F-measures of rouge-score's ``RougeScorer`` with the XL-Sum multilingual scorer's
                  Japanese tokenisation: lowercase, drop control characters, Unicode punctuation
                  and ASCII symbols become separators (BERT's BasicTokenizer), then MeCab word
                  segmentation; max over references. XL-Sum's published numbers used full UniDic;
                  we use unidic-lite (UniDic 2.1.2), so a few segmentations, hence scores, can differ.

One MeCab tagger per process, created on first use; tokenisations are cached because the same
references are scored once per arm.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from switchpoint.core.contract import JobError
from switchpoint.core.metric_names import KNOWN_METRICS

MetricFn = Callable[[str, Sequence[str]], float]
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_CACHE = 1 << 16  # distinct strings kept per tokeniser cache


# --- shared MeCab tagger -----------------------------------------------------------------------
@lru_cache(maxsize=1)
def tagger():
    """The process's MeCab tagger (fugashi + unidic-lite, ``-Owakati``), built on first use."""
    try:
        import fugashi
    except ImportError as err:
        raise JobError("MeCab metrics need fugashi and unidic-lite: pip install 'switchpoint[score]'") from err
    return fugashi.Tagger("-Owakati")


def mecab_split(text: str) -> list[str]:
    """MeCab word segmentation (surface forms), as ``mecab -Owakati`` prints it."""
    return tagger().parse(text).split()


# --- JSQuAD as JGLUE scores it -----------------------------------------------------------------
def jglue_normalize(text: str) -> str:
    """JGLUE's normalize_answer: lowercase, strip trailing 。 (before whitespace is touched), collapse spaces."""
    return " ".join(text.lower().rstrip("。").split())


@lru_cache(maxsize=_CACHE)
def _jglue_golds(references: tuple[str, ...]) -> tuple[tuple[str, Counter], ...]:
    golds = [g for g in map(jglue_normalize, references) if g] or [""]
    return tuple((g, Counter(g)) for g in golds)


def _char_f1(pred: str, pred_counts: Counter, gold: str, gold_counts: Counter) -> float:
    if not pred or not gold:  # squad_metrics: no-answer agrees only with no-answer
        return float(pred == gold)
    # sum of min counts = size of the Counter intersection, without building it (hot loop)
    same = sum(min(n, pred_counts[c]) for c, n in gold_counts.items() if c in pred_counts)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    pred = jglue_normalize(prediction)
    return float(any(pred == gold for gold, _ in _jglue_golds(tuple(references))))


def f1(prediction: str, references: Sequence[str]) -> float:
    pred = jglue_normalize(prediction)
    counts = Counter(pred)
    return max(_char_f1(pred, counts, gold, gc) for gold, gc in _jglue_golds(tuple(references)))


# --- JSQuAD as the Japanese lm-evaluation-harness scores it ------------------------------------
# The harness's punctuation list: these full-width/CJK marks plus string.punctuation; a token is
# dropped only when it is exactly one of these characters.
_HARNESS_PUNCT = frozenset("！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
                           "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_HARNESS_EMOJI = re.compile("[\U0001F600-\U0001F64F\U0001F300-\U0001F5FF\U0001F680-\U0001F6FF"
                            "\U0001F1E0-\U0001F1FF\U00002702-\U000027B0]+")


@lru_cache(maxsize=1)
def _harness_normalizers():
    try:
        import emoji
        import neologdn
    except ImportError as err:
        raise JobError("f1_mecab needs neologdn and emoji (the harness's normalisers): "
                       "pip install 'switchpoint[score]'") from err
    return neologdn.normalize, emoji.is_emoji


@lru_cache(maxsize=_CACHE)
def harness_tokens(text: str) -> tuple[str, ...]:
    """Tokens the JP harness compares: emoji out, neologdn, whitespace collapsed, MeCab, punctuation out."""
    normalize, is_emoji = _harness_normalizers()
    text = _HARNESS_EMOJI.sub("", "".join(c for c in text if not is_emoji(c)))
    text = " ".join(normalize(text).split())
    return tuple(t for t in mecab_split(text) if t not in _HARNESS_PUNCT)


def _token_f1(pred: tuple[str, ...], gold: tuple[str, ...]) -> float:
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:  # the harness returns 0 here, also when both are empty
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1_mecab(prediction: str, references: Sequence[str]) -> float:
    pred = harness_tokens(prediction)
    return max(_token_f1(pred, harness_tokens(ref)) for ref in references)


# --- XL-Sum ROUGE -------------------------------------------------------------------------------
class _XLSumSanitiser(dict):
    """str.translate table for XL-Sum's sanitiser (BERT's BasicTokenizer): control characters deleted,
    Unicode punctuation and ASCII symbols -> space, anything else kept. Hand-written because the
    XL-Sum scorer is not on PyPI; filled lazily, one entry per distinct character seen, so
    translate stays in C for every character met before."""

    def __missing__(self, cp: int) -> str | None:
        char = chr(cp)
        cat = unicodedata.category(char)
        if char in "\t\n\r":
            value: str | None = char
        elif cp in (0, 0xFFFD) or cat[0] == "C":
            value = None
        elif 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or cat[0] == "P":
            value = " "
        else:
            value = char
        self[cp] = value
        return value


_XLSUM_SANITISER = _XLSumSanitiser()


@lru_cache(maxsize=_CACHE)
def xlsum_tokens(text: str) -> tuple[str, ...]:
    """XL-Sum's Japanese ROUGE tokens: lowercase, sanitise, MeCab."""
    return tuple(mecab_split(" ".join(text.lower().translate(_XLSUM_SANITISER).split())))


class XLSumJapaneseTokenizer:
    """The tokenizer object rouge-score's RougeScorer calls (``.tokenize(text) -> tokens``)."""

    def tokenize(self, text: str) -> tuple[str, ...]:
        return xlsum_tokens(text)


@lru_cache(maxsize=8)
def rouge_scorer(types: tuple[str, ...] = ROUGE_TYPES):
    try:
        from rouge_score.rouge_scorer import RougeScorer
    except ImportError as err:
        raise JobError("ROUGE needs rouge-score: pip install 'switchpoint[score]'") from err
    # use_stemmer is moot: a custom tokenizer replaces rouge-score's (and XL-Sum has no Japanese stemmer)
    return RougeScorer(list(types), tokenizer=XLSumJapaneseTokenizer())


def rouge_fmeasures(prediction: str, references: Sequence[str], types: tuple[str, ...] = ROUGE_TYPES) -> dict[str, float]:
    """F-measure per ROUGE type, each the max over references (rouge-score's score_multi rule)."""
    scorer = rouge_scorer(types)
    best = dict.fromkeys(types, 0.0)
    for ref in references:
        scores = scorer.score(ref, prediction)  # rouge-score's order: (target, prediction)
        for t in types:
            best[t] = max(best[t], scores[t].fmeasure)
    return best


def rouge1(prediction: str, references: Sequence[str]) -> float:
    return rouge_fmeasures(prediction, references, ("rouge1",))["rouge1"]


def rouge2(prediction: str, references: Sequence[str]) -> float:
    return rouge_fmeasures(prediction, references, ("rouge2",))["rouge2"]


def rougeL(prediction: str, references: Sequence[str]) -> float:
    return rouge_fmeasures(prediction, references, ("rougeL",))["rougeL"]


# --- registry and batch scoring ----------------------------------------------------------------
METRICS: dict[str, MetricFn] = {
    "exact_match": exact_match,
    "f1": f1,
    "f1_mecab": f1_mecab,
    "rouge1": rouge1,
    "rouge2": rouge2,
    "rougeL": rougeL,
}
assert set(METRICS) == KNOWN_METRICS, "metric_names.KNOWN_METRICS and metrics.METRICS disagree"


def get_metric(name: str) -> MetricFn:
    if name not in METRICS:
        raise JobError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def score_batch(names: Sequence[str], predictions: Sequence[str],
                references: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Scores of every (prediction, references) pair for each metric, as float arrays in 0..1.

    ROUGE types are computed together (one tokenisation and one scorer call per pair).
    """
    for name in names:
        get_metric(name)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    out = {name: np.zeros(len(predictions), dtype=np.float64) for name in names}
    rouge_types = tuple(n for n in names if n in ROUGE_TYPES)
    plain = [(n, METRICS[n]) for n in names if n not in ROUGE_TYPES]
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        for name, fn in plain:
            out[name][i] = fn(pred, refs)
        if rouge_types:
            for name, value in rouge_fmeasures(pred, refs, rouge_types).items():
                out[name][i] = value
    return out


def clear_caches() -> None:
    """Forget cached tokenisations (benchmarks time cold runs)."""
    for fn in (_jglue_golds, harness_tokens, xlsum_tokens):
        fn.cache_clear()


def implementation(names: Sequence[str]) -> dict[str, str]:
    """Versions behind the metrics in ``names`` (recorded in score_metrics.json so numbers can be traced)."""
    from importlib.metadata import PackageNotFoundError, version

    wanted = {"rouge-score"} if any(n in ROUGE_TYPES for n in names) else set()
    if any(n in ROUGE_TYPES or n == "f1_mecab" for n in names):
        wanted |= {"fugashi", "unidic-lite"}
    if "f1_mecab" in names:
        wanted |= {"neologdn", "emoji"}
    out = {}
    for package in sorted(wanted):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out
