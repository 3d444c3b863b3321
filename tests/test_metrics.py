"""Metrics agree with the official definitions on cases that tell the definitions apart.

Every expected value is worked out by hand from the definition in the test's docstring or comment;
where MeCab's segmentation matters, the test first pins the tokens it relies on.
"""

from __future__ import annotations

import pytest
from switchpoint.core.contract import JobError
from switchpoint.core.metric_names import KNOWN_METRICS
from switchpoint.score import metrics

EM, F1, F1_MECAB = metrics.exact_match, metrics.f1, metrics.f1_mecab


def test_registry_covers_exactly_the_known_metric_names():
    assert set(metrics.METRICS) == KNOWN_METRICS
    with pytest.raises(JobError, match="unknown metric 'bleu'"):
        metrics.get_metric("bleu")


# --- JSQuAD, JGLUE definition: lowercase, rstrip("。"), collapse whitespace; F1 on characters -------
def test_full_width_digits_are_not_normalised_by_jglue_but_are_by_the_harness():
    # chars of ２０１９年 vs 2019年: only 年 is shared -> P = R = 1/5 -> F1 = 0.2
    assert EM("２０１９年", ["2019年"]) == 0.0
    assert F1("２０１９年", ["2019年"]) == pytest.approx(0.2)
    # the harness's neologdn turns full-width digits into ASCII: identical tokens
    assert F1_MECAB("２０１９年", ["2019年"]) == pytest.approx(1.0)


def test_full_width_latin_letters_are_lowercased_but_not_narrowed():
    assert EM("ＡＢＣ", ["ａｂｃ"]) == 1.0  # str.lower maps full-width capitals to full-width small
    assert EM("ＡＢＣ", ["abc"]) == 0.0 and F1("ＡＢＣ", ["abc"]) == 0.0
    assert EM("NHK", ["nhk"]) == 1.0 and F1("NHK", ["nhk"]) == 1.0
    # the harness does not lowercase: no token in common
    assert F1_MECAB("NHK", ["nhk"]) == 0.0


def test_trailing_maru_is_stripped_only_when_it_is_last():
    assert EM("東京。", ["東京"]) == 1.0 and F1("東京。", ["東京"]) == 1.0
    assert EM("東京。。", ["東京"]) == 1.0
    assert EM("東京", ["東京。"]) == 1.0
    # rstrip("。") runs before whitespace is collapsed, so a following newline keeps the 。:
    # "東京。" (3 chars) vs "東京" (2): P = 2/3, R = 1 -> F1 = 0.8
    assert EM("東京。\n", ["東京"]) == 0.0
    assert F1("東京。\n", ["東京"]) == pytest.approx(0.8)


def test_inner_spaces_count_as_characters_after_collapsing():
    # "東京 都" -> 4 chars incl. one space vs 3: P = 3/4, R = 1 -> F1 = 6/7
    assert EM("東京 都", ["東京都"]) == 0.0
    assert F1("東京 都", ["東京都"]) == pytest.approx(6 / 7)
    assert F1("東京 \t 都", ["東京都"]) == pytest.approx(6 / 7)
    assert EM("  東京都 \n", ["東京都"]) == 1.0
    # neologdn removes the space between Japanese characters
    assert F1_MECAB("東京 都", ["東京都"]) == pytest.approx(1.0)


def test_japanese_brackets_are_kept_by_jglue_and_dropped_by_the_harness():
    # 「東京」 (4 chars) vs 東京 (2): P = 2/4, R = 1 -> F1 = 2/3
    assert EM("「東京」", ["東京"]) == 0.0
    assert F1("「東京」", ["東京"]) == pytest.approx(2 / 3)
    assert metrics.harness_tokens("「東京」") == ("東京",)
    assert F1_MECAB("「東京」", ["東京"]) == pytest.approx(1.0)


def test_empty_prediction_scores_zero_and_golds_normalising_to_empty_are_dropped():
    assert EM("", ["東京"]) == 0.0 and F1("", ["東京"]) == 0.0 and F1_MECAB("", ["東京"]) == 0.0
    # "。" normalises to "" and is dropped, so "" cannot match it
    assert EM("", ["。", "東京"]) == 0.0
    # when every gold is empty, SQuAD's rule makes the only gold "" (no-answer agrees with no-answer)
    assert EM("", ["。"]) == 1.0 and F1("", ["。"]) == 1.0


def test_maximum_over_golds_when_only_the_third_matches():
    assert EM("東京", ["大阪", "京都府", "東京"]) == 1.0
    # per gold: 大阪 -> 0; 京都府 -> P=1/2, R=1/3 -> 0.4; 東京都 -> P=1, R=2/3 -> 0.8
    assert F1("東京", ["大阪", "京都府"]) == pytest.approx(0.4)
    assert F1("東京", ["大阪", "京都府", "東京都"]) == pytest.approx(0.8)
    assert EM("東京", ["大阪", "京都府", "東京都"]) == 0.0


def test_same_characters_in_another_order_is_a_full_character_f1():
    assert EM("京東", ["東京"]) == 0.0
    assert F1("京東", ["東京"]) == pytest.approx(1.0)
    # characters are a multiset: 東東 vs 東京 share one 東 -> P = R = 1/2
    assert F1("東東", ["東京"]) == pytest.approx(0.5)


def test_harness_drops_emoji_and_punctuation_tokens():
    assert F1_MECAB("東京😀！", ["東京"]) == pytest.approx(1.0)
    assert F1("東京😀！", ["東京"]) == pytest.approx(2 * (2 / 4) / (2 / 4 + 1))


# --- XLSum: XL-Sum multilingual tokenisation + rouge-score --------------------------------------
def test_identical_japanese_summaries_score_one_where_rouge_scores_default_gives_zero():
    summary = "北朝鮮の金正恩委員長との首脳会談を6月12日にシンガポールで開催すると発表した。"
    for name in ("rouge1", "rouge2", "rougeL"):
        assert metrics.METRICS[name](summary, [summary]) == pytest.approx(1.0)
    from rouge_score.rouge_scorer import RougeScorer

    kana_kanji = "首脳会談をシンガポールで開催すると発表した。"  # rouge-score keeps only [a-z0-9]+ tokens
    assert RougeScorer(["rouge1"]).score(kana_kanji, kana_kanji)["rouge1"].fmeasure == 0.0
    assert metrics.rouge1(kana_kanji, [kana_kanji]) == pytest.approx(1.0)


def test_mixed_latin_japanese_summary_is_lowercased_and_segmented():
    pred, ref = "Apple社のiPhone", "Google社のiPhone"
    assert metrics.xlsum_tokens(pred) == ("apple", "社", "の", "iphone")
    assert metrics.xlsum_tokens(ref) == ("google", "社", "の", "iphone")
    # unigrams: 3 of 4 shared; bigrams: (社,の), (の,iphone) of 3; LCS = 3 of 4
    assert metrics.rouge1(pred, [ref]) == pytest.approx(3 / 4)
    assert metrics.rouge2(pred, [ref]) == pytest.approx(2 / 3)
    assert metrics.rougeL(pred, [ref]) == pytest.approx(3 / 4)
    assert metrics.rouge1("APPLE社のIPHONE", [pred]) == pytest.approx(1.0)


def test_punctuation_and_ascii_symbols_are_separators_not_tokens():
    assert metrics.xlsum_tokens("東京、大阪！") == metrics.xlsum_tokens("東京 大阪") == ("東京", "大阪")
    assert metrics.xlsum_tokens("$100（税込）") == ("100", "税込")
    assert metrics.rouge2("「東京、大阪」", ["東京 大阪"]) == pytest.approx(1.0)
    # no NFKC in XL-Sum's scorer: full-width letters stay distinct from ASCII
    assert metrics.rouge1("ＡＢＣ", ["abc"]) == 0.0


def test_rouge_l_follows_order_and_rouge_takes_the_best_reference():
    assert metrics.xlsum_tokens("大阪 東京") == ("大阪", "東京")
    # same unigrams, no shared bigram, LCS 1 of 2
    assert metrics.rouge1("大阪 東京", ["東京 大阪"]) == pytest.approx(1.0)
    assert metrics.rouge2("大阪 東京", ["東京 大阪"]) == 0.0
    assert metrics.rougeL("大阪 東京", ["東京 大阪"]) == pytest.approx(0.5)
    assert metrics.rougeL("大阪 東京", ["東京 大阪", "大阪 東京"]) == pytest.approx(1.0)
    assert metrics.rouge1("", ["東京"]) == 0.0


# --- batch helper and the shared tagger --------------------------------------------------------
def test_score_batch_matches_the_per_pair_functions():
    preds = ["東京", "「大阪」", "", "Apple社のiPhone"]
    refs = [["東京都"], ["大阪", "京都"], ["東京"], ["Google社のiPhone", "apple社"]]
    names = ["exact_match", "f1", "f1_mecab", "rouge1", "rouge2", "rougeL"]
    batch = metrics.score_batch(names, preds, refs)
    for name in names:
        expected = [metrics.METRICS[name](p, r) for p, r in zip(preds, refs)]
        assert batch[name].tolist() == pytest.approx(expected), name
    with pytest.raises(JobError, match="unknown metric"):
        metrics.score_batch(["accuracy"], preds, refs)


def test_one_tagger_per_process():
    assert metrics.tagger() is metrics.tagger()
