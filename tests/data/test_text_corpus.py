"""The Python Language Reference corpus for document membership: deterministic, short real
prose, no near-duplicates, and a random member / non-member split that a bag-of-words
classifier cannot tell apart (the blind-baseline condition of Das et al. 2024)."""

from __future__ import annotations

import numpy as np
import pytest

from privguard.data.corpus import python_reference_documents
from privguard.errors import ConfigError


@pytest.fixture(scope="module")
def docs():
    return python_reference_documents()


def test_the_corpus_is_deterministic_short_prose_without_near_duplicates(docs):
    assert len(docs) >= 1000  # enough for the benchmark's 1,000 documents
    assert docs == python_reference_documents()
    words = [d.split() for d in docs]
    assert min(map(len, words)) >= 12 and max(map(len, words)) <= 45
    assert not any("::=" in d or d.startswith(" ") for d in docs)  # no grammar rules or code
    seen: dict[tuple[str, ...], int] = {}
    for i, w in enumerate(words):
        low = [x.lower() for x in w]
        for j in range(len(low) - 7):
            gram = tuple(low[j : j + 8])
            assert seen.setdefault(gram, i) == i, (docs[seen[gram]], docs[i])


def test_a_sample_is_seeded_and_drawn_from_the_whole_corpus(docs):
    a = python_reference_documents(200, seed=3)
    assert a == python_reference_documents(200, seed=3)
    assert a != python_reference_documents(200, seed=4)
    assert len(set(a)) == 200 and set(a) <= set(docs)
    index = sorted(docs.index(d) for d in a)
    assert index[0] < len(docs) // 10 and index[-1] > 9 * len(docs) // 10
    with pytest.raises(ConfigError, match="has .* documents"):
        python_reference_documents(len(docs) + 1)


def test_a_random_split_is_one_distribution_to_a_bag_of_words_classifier(docs):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.zeros(len(docs), dtype=int)
    y[rng.permutation(len(docs))[: len(docs) // 2]] = 1
    fit = rng.random(len(docs)) < 0.5
    text = np.array(docs)
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit(text[fit])
    clf = LogisticRegression(max_iter=1000).fit(vec.transform(text[fit]), y[fit])
    auc = roc_auc_score(y[~fit], clf.predict_proba(vec.transform(text[~fit]))[:, 1])
    assert 0.42 <= auc <= 0.58  # ~590 held-out documents: a 0.5 AUC's sd is about 0.024
