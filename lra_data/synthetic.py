"""Built-in synthetic sentences for tiny fixture datasets (no real data needed).

Reviews mix positive/negative phrases (label = majority sentiment) and include non-ASCII
characters so the byte-level path sees multi-byte UTF-8; "papers" for the AAN layout are
drawn from topic word lists (a pair is related, label 1, when both share a topic).
"""

from __future__ import annotations

import random

_POSITIVE = ["a wonderful film", "truly moving performances", "I loved every minute",
             "the score is beautiful", "a charming café scene", "brilliant and naïve in "
                                                                  "the best way",
             "Zoë steals the show 😀", "funny, warm and clever"]
_NEGATIVE = ["a tedious mess", "the plot makes no sense", "I wanted my money back",
             "wooden acting throughout", "the dialogue is painful — really",
             "boring from start to finish", "a waste of a good cast", "déjà vu, and not "
                                                                      "the good kind"]
_NEUTRAL = ["The film runs two hours.", "It was shot in 日本 and Paris.",
            "The director's previous work was a documentary.", "I saw it on a Tuesday.",
            "<br /><br />"]
_TOPICS = {
    "parsing": ["syntactic", "treebank", "dependency", "parser", "grammar", "constituent"],
    "translation": ["alignment", "bilingual", "decoder", "phrase table", "BLEU", "reordering"],
    "speech": ["acoustic", "phoneme", "recognizer", "prosody", "spoken", "wave form"],
    "semantics": ["lexical", "WordNet", "sense", "entailment", "frame", "compositional"],
}


def review(rng: random.Random, label: int, sentences: int = 6) -> str:
    """A synthetic review whose sentiment is ``label`` (1 = positive)."""
    main, other = (_POSITIVE, _NEGATIVE) if label == 1 else (_NEGATIVE, _POSITIVE)
    parts = []
    for i in range(sentences):
        if i % 3 == 2:
            parts.append(rng.choice(_NEUTRAL))
        elif i == 4:
            parts.append(rng.choice(other).capitalize() + ", sadly." if label else
                         rng.choice(other).capitalize() + ", at least.")
        else:
            parts.append(rng.choice(main).capitalize() + ".")
    return " ".join(parts)


def paper(rng: random.Random, topic: str, words: int = 40) -> str:
    """A synthetic abstract about ``topic``."""
    vocab = _TOPICS[topic]
    filler = ["we", "propose", "a", "model", "for", "the", "task", "of", "and", "results",
              "show", "über", "naïve", "baseline"]
    out = [rng.choice(vocab) if rng.random() < 0.4 else rng.choice(filler) for _ in range(words)]
    return "Abstract: " + " ".join(out) + "."


def topics() -> list[str]:
    return sorted(_TOPICS)
