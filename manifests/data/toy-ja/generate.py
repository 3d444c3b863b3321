"""Generate the bundled toy task (templated Japanese classification): run once, output is committed.

    python manifests/data/toy-ja/generate.py   # rewrites train.jsonl and eval.jsonl next to this file

Each record is a short templated sentence naming one item; the answer is the item's category (果物,
野菜, 動物 or 乗り物). Every item occurs in both files, in different sentences, so a model that has
seen more training examples knows more items: accuracy grows with N, which is the point of the toy.
Seeded: the same files every time.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ITEMS = {
    "果物": ["りんご", "みかん", "ぶどう", "もも", "なし", "いちご", "バナナ", "メロン", "すいか", "レモン"],
    "野菜": ["にんじん", "たまねぎ", "キャベツ", "トマト", "なす", "きゅうり", "だいこん", "ピーマン", "ごぼう", "ねぎ"],
    "動物": ["いぬ", "ねこ", "うま", "うし", "ぶた", "さる", "くま", "うさぎ", "きつね", "ぞう"],
    "乗り物": ["でんしゃ", "バス", "タクシー", "ひこうき", "ふね", "じてんしゃ", "トラック", "バイク", "ヘリコプター", "しんかんせん"],
}
PEOPLE = ["田中さん", "佐藤さん", "鈴木さん", "山田さん", "高橋さん", "伊藤さん", "渡辺さん", "中村さん"]
PLACES = ["駅前", "公園", "市場", "学校", "港", "広場", "店", "家"]
TEMPLATES = ["{person}は{place}で{item}を見ました。", "{place}に{item}がありました。", "{person}が{item}の話をしました。",
             "きのう{place}で{item}を見かけた。", "{person}の好きなものは{item}です。"]


def record(rng: random.Random, category: str, item: str) -> dict:
    text = rng.choice(TEMPLATES).format(person=rng.choice(PEOPLE), place=rng.choice(PLACES), item=item)
    return {"text": text, "item": item, "answer": category}


def main() -> None:
    rng = random.Random(20240611)
    pairs = [(c, i) for c, items in ITEMS.items() for i in items]
    folder = Path(__file__).parent
    for split, count in (("eval", 120), ("train", 400)):
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as out:
            for k in range(count):
                category, item = pairs[k % len(pairs)] if split == "eval" else rng.choice(pairs)
                rec = {"id": f"toy-ja-{split}-{k:04d}", **record(rng, category, item)}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
