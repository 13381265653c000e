"""The scale benchmark's own parts (benchmarks/scale.py): its document generator and its growth arithmetic, and
the top-k search it measures against sorting every score."""

import statistics
import sys

import numpy as np

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import scale  # noqa: E402


def test_generated_documents_are_seeded_with_the_promised_size_distribution():
    docs = list(scale.generate_documents(1500))
    assert docs == list(scale.generate_documents(1500))  # the same seed, the same documents
    assert docs != list(scale.generate_documents(1500, seed=8))
    sizes = [len(d["text"].encode()) for d in docs]
    assert 1200 <= statistics.median(sizes) <= 1800, statistics.median(sizes)
    assert max(sizes) > 8_000 and max(sizes) < 50_000  # a tail, within the reader's record limit
    assert len({d["id"] for d in docs}) == len(docs)
    near_copies = sum(d["text"].endswith(" Updated.") for d in docs)
    assert 0.01 * len(docs) < near_copies < 0.06 * len(docs)


def test_growth_reads_linear_flat_and_bounded_from_the_points():
    linear = [{"size": n, "seconds": 0.002 * n, "peak_rss_mb": 500 + n / 1000} for n in (100, 1000, 10_000)]
    got = scale.growth(linear)
    assert got["time_exponent"] == 1.0 and got["throughput_flat"] and got["memory_bounded"] and got["span"] == 100
    quadratic = [{"size": n, "seconds": 1e-6 * n * n, "peak_rss_mb": n / 10} for n in (100, 1000, 10_000)]
    got = scale.growth(quadratic)
    assert got["time_exponent"] == 2.0 and not got["throughput_flat"] and not got["memory_bounded"]
    lookup = [{"size": n, "seconds": 0.001, "peak_rss_mb": 100} for n in (1000, 100_000)]
    assert scale.growth(lookup, linear=False)["throughput_flat"]


def test_top_k_search_returns_what_sorting_every_score_returns():
    from resources.retrieval.index import DenseIndex

    vectors = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = DenseIndex([f"c{i}" for i in range(500)], vectors)
    queries = vectors[:20] + 0.1
    scores = queries @ vectors.T
    expected = [[f"c{j}" for j in np.argsort(-row)[:5]] for row in scores]
    assert [[i for i, _ in hits] for hits in index.search(queries, 5)] == expected
    assert len(index.search(queries[:1], 900)[0]) == 500  # k beyond the index: every passage, sorted
