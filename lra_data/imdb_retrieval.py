"""``imdb_retrieval``: a SUBSTITUTE for LRA's AAN retrieval task, built from IMDB reviews.

The AAN corpus (LRA's document-matching task) cannot be obtained here, so this task gives a
two-tower byte-level matching problem from real text we have: **do two passages come from the
same review?** It is not AAN and its accuracies must never be reported as AAN results. (The
shared IMDB files carry no film ids, so "same film" pairs are not possible.)

Construction, per split (seeded):

* every review is cut into a first and a second passage at the sentence boundary (``.!?``
  followed by whitespace, or a run of ``<br />`` tags) nearest its middle -- among those in
  the middle half of the text -- else at the whitespace nearest the middle, else at the
  middle character; the separator is dropped;
* identical texts are used once (later copies are counted in ``duplicates_dropped``);
* within each sentiment class the reviews are shuffled and half become positives
  ``(first_i, second_i)``; the other half become negatives ``(first_i, second_pi(i))`` with
  ``pi`` a random cyclic derangement of that half -- the partner has the same sentiment, so
  sentiment is no cue, and every passage occurs exactly once per split, so passage frequency
  is no cue either; a class left with a single negative joins a cross-class derangement;
* the pairs are shuffled. Labels are balanced (to within one per class).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_SENTENCE = re.compile(rb"(?<=[.!?])\s+|\s*(?:<br\s*/?>\s*)+")
_SPACE = re.compile(rb"\s+")


def split_point(text: bytes) -> tuple[int, int]:
    """``(a, b)``: the passages are ``text[:a]`` and ``text[b:]``.

    The cut is the sentence boundary nearest the middle among those whose centre lies in the
    middle half of the text; failing that the whitespace run nearest the middle; failing that
    the character boundary nearest the middle.
    """
    n = len(text)
    mid = n / 2
    for pattern, window in ((_SENTENCE, n / 4), (_SPACE, n / 2)):
        best: tuple[float, int, int] | None = None
        for m in pattern.finditer(text):
            a, b = m.start(), m.end()
            dist = abs((a + b) / 2 - mid)
            if a == 0 or b >= n or dist > window:
                continue
            if best is None or dist < best[0]:
                best = (dist, a, b)
        if best is not None:
            return best[1], best[2]
    cut = n // 2
    while 0 < cut < n and (text[cut] & 0xC0) == 0x80:  # UTF-8 continuation byte
        cut -= 1
    return cut, cut


@dataclass
class Pairs:
    """Built pairs: passages, labels, and which review each passage came from."""

    first: list[bytes]
    second: list[bytes]
    labels: np.ndarray
    review_a: np.ndarray
    review_b: np.ndarray
    duplicates_dropped: int


def _derange(rng: np.random.Generator, members: np.ndarray) -> np.ndarray:
    """Partner of each member under a random cyclic permutation (no fixed points, n >= 2)."""
    order = rng.permutation(members.size)
    partner = np.empty_like(members)
    partner[order] = members[np.roll(order, -1)]
    return partner


def build_pairs(texts: list[bytes], labels: np.ndarray, digests: list[bytes],
                seed: int, stream: int = 0) -> Pairs:
    """Pairs of one split from its reviews (``digests`` identify duplicate texts); random
    stream ``SeedSequence(seed, spawn_key=(0xAA17, stream))``."""
    labels = np.asarray(labels, dtype=np.int64)
    seen: set[bytes] = set()
    unique = []
    for i, d in enumerate(digests):
        if d not in seen:
            seen.add(d)
            unique.append(i)
    unique_arr = np.asarray(unique, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xAA17, stream)))
    partner = np.full(len(texts), -1, dtype=np.int64)
    leftovers: list[int] = []
    for label in np.unique(labels[unique_arr]):
        members = rng.permutation(unique_arr[labels[unique_arr] == label])
        negatives = members[: members.size // 2]
        partner[members[members.size // 2:]] = members[members.size // 2:]
        if negatives.size >= 2:
            partner[negatives] = _derange(rng, negatives)
        else:
            leftovers.extend(int(i) for i in negatives)
    if len(leftovers) >= 2:
        left = np.asarray(leftovers, dtype=np.int64)
        partner[left] = _derange(rng, left)
    elif leftovers:
        partner[leftovers[0]] = leftovers[0]
    review_a = rng.permutation(unique_arr)
    review_b = partner[review_a]
    cuts = {int(i): split_point(texts[int(i)]) for i in unique_arr}
    first = [texts[int(a)][: cuts[int(a)][0]] for a in review_a]
    second = [texts[int(b)][cuts[int(b)][1]:] for b in review_b]
    pair_labels = (review_a == review_b).astype(np.int64)
    return Pairs(first, second, pair_labels, review_a, review_b,
                 len(texts) - unique_arr.size)
