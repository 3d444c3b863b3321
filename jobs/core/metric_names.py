"""Names of the metrics a task may ask for; ``metrics.py`` (score extra) implements each one.

Kept apart from the implementations so validating a manifest needs neither MeCab nor rouge-score.
"""

KNOWN_METRICS: frozenset[str] = frozenset({"exact_match", "f1", "f1_mecab", "rouge1", "rouge2", "rougeL"})
