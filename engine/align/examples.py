"""In-context examples for the few_shot ADM, chosen as align-system chooses them:
the probes of other scenarios most similar to the one being decided, each
answered with the target's choice and a short reasoning that names the
attribute. Similarity is the cosine of TF-IDF vectors of the probes' text and
choices (no model hub needed)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from engine.align.data import Probe

_WORD = re.compile(r"[a-z0-9]+")


def probe_text(p: Probe) -> str:
    return " ".join((p.text, *p.choices))


def tfidf(texts: list[str]) -> np.ndarray:
    """`[n_texts, n_terms]` L2-normalised TF-IDF rows (smoothed idf, as
    scikit-learn's TfidfVectorizer: idf = ln((1 + n) / (1 + df)) + 1)."""
    counts = [Counter(_WORD.findall(t.lower())) for t in texts]
    vocab = {w: j for j, w in enumerate(sorted(set().union(*counts)))} if counts else {}
    tf = np.zeros((len(texts), len(vocab)))
    for i, c in enumerate(counts):
        for w, n in c.items():
            tf[i, vocab[w]] = n
    idf = np.log((1 + len(texts)) / (1 + (tf > 0).sum(0))) + 1
    x = tf * idf
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)


def similarity(probes: list[Probe]) -> dict[tuple[str, str], float]:
    """Cosine similarity of every pair of probes' TF-IDF vectors, by item id."""
    x = tfidf([probe_text(p) for p in probes])
    s = x @ x.T
    ids = [p.item_id for p in probes]
    return {(a, b): float(s[i, j]) for i, a in enumerate(ids) for j, b in enumerate(ids)}


def rank_examples(pool: list[Probe], probe: Probe, k: int,
                  sim: dict[tuple[str, str], float] | None = None) -> list[Probe]:
    """The k probes of `pool` most similar to `probe`, most similar first,
    never from `probe`'s own scenario (ties keep the pool's order)."""
    others = [p for p in pool if p.scenario_id != probe.scenario_id]
    if sim is None:
        sim = similarity([probe, *others])
    ranked = sorted(range(len(others)), key=lambda i: -sim[(probe.item_id, others[i].item_id)])
    return [others[i] for i in ranked[:k]]
