"""Builds the labelled set and the graded answers of this example from BANKING77 (CC BY 4.0).

    python examples/judges/make_labels.py /work/shared/data/banking77

Deterministic: the same data gives the same files. See SOURCE.md.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).parent
LABELLED = 240  # half with the right intent (pass), half with a wrong one (fail)
ANSWERS = 60  # graded by the example's test: half right, half wrong


def read(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["text"].strip(), row["category"].strip()) for row in csv.DictReader(handle)]


def graded(text: str, label: str) -> str:
    """The output a judge grades: the message and the label given to it."""
    return f'Customer message: "{text}"\nIntent label: {label}'


def cases(rows: list[tuple[str, str]], count: int, intents: list[str], rng: random.Random) -> list[dict[str, object]]:
    unique = list(dict.fromkeys(rows))
    rng.shuffle(unique)
    out = []
    for i, (text, right) in enumerate(unique[:count]):
        wrong = rng.choice([x for x in intents if x != right])
        label = right if i % 2 == 0 else wrong
        verdict = "pass" if label == right else "fail"
        note = "the right intent" if verdict == "pass" else f"a wrong intent; the right one is {right}"
        out.append({"output": graded(text, label), "verdict": verdict,
                    "inputs": {"text": text, "label": label}, "note": note})
    return out


def main(folder: Path) -> None:
    train, test = read(folder / "train.csv"), read(folder / "test.csv")
    intents = sorted({c for _, c in train}, key=str.casefold)
    labels = cases(train, LABELLED, intents, random.Random(28))
    answers = cases(test, ANSWERS, intents, random.Random(29))
    for path, rows in ((HERE / "judges" / "intent.labels.jsonl", labels), (HERE / "answers.jsonl", answers)):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} cases, {sum(r['verdict'] == 'pass' for r in rows)} pass")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
