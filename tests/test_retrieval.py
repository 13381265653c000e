"""Retrieval with the real embedded MiniLM model: nearest documents and recall@k."""

from resources.retrieval.index import KnowledgeIndexer, recall_at_k


def test_questions_retrieve_their_source_documents():
    indexer = KnowledgeIndexer()
    docs = {
        "kb-tokens": "API tokens expire after 90 days; rotate them from Settings > API.",
        "kb-boards": "The Free plan allows 3 boards per workspace and up to 5 members.",
        "kb-export": "Exports are emailed to the workspace owner as a ZIP archive within 15 minutes.",
        "kb-sso": "SAML single sign-on is available on the Business and Enterprise plans.",
    }
    index = indexer.build(list(docs), list(docs.values()))
    assert index.vectors.shape == (4, 384)
    questions = ["When does my API token stop working?", "How many boards can a free workspace have?",
                 "How do I get a copy of all my data?"]
    retrieved = [[doc for doc, _ in row] for row in index.search(indexer.embed(questions), 2)]
    assert [r[0] for r in retrieved] == ["kb-tokens", "kb-boards", "kb-export"]


def test_recall_at_k_on_known_rankings():
    retrieved = [["a", "b", "c"], ["x", "a", "b"], ["x", "y", "z"]]
    assert recall_at_k(retrieved, ["a", "a", "a"], (1, 2, 3)) == {"recall@1": 1 / 3, "recall@2": 2 / 3, "recall@3": 2 / 3}
    assert recall_at_k([], [], (1,)) == {"recall@1": 0.0}
