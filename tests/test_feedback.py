"""Reviewer feedback: validation with quarantine, and the routing rule for corrections."""

from resources.evaluation.feedback import golden_corrections, read_feedback, training_documents


def test_feedback_is_validated_and_bad_rows_quarantined(tmp_path):
    (tmp_path / "a.csv").write_text(
        "example_id,verdict,reviewer,question,corrected_answer\n"
        "G-1,correct,r1,,Three boards.\n"
        "S-9,Correct,r2,How do I move a board?,Use Move board.\n"
        "G-2,maybe,r1,,\n"
        "G-3,correct,r1,,\n"
        ",approve,r1,,\n"
    )
    (tmp_path / "b.jsonl").write_text('{"example_id": "G-1", "verdict": "correct", "reviewer": "r3", "corrected_answer": "3 boards."}\n{oops\n')
    (tmp_path / "notes.txt").write_text("not feedback")
    rows, quarantine = read_feedback(tmp_path)
    assert [(r["example_id"], r["verdict"]) for r in rows] == [("G-1", "correct"), ("S-9", "correct"), ("G-1", "correct")]
    reasons = sorted((q["source_path"], q["line"], q["reason"]) for q in quarantine if q["line"] is not None)
    assert reasons == [("a.csv", 3, "invalid_verdict"), ("a.csv", 4, "empty_record"), ("a.csv", 5, "unrecognised_schema"),
                       ("b.jsonl", 2, "malformed_json")]
    assert any(q["source_path"] == "notes.txt" and q["reason"] == "unsupported_format" for q in quarantine)


def test_corrections_route_to_golden_or_training_last_one_wins(tmp_path):
    rows = [
        {"feedback_id": "f1", "example_id": "G-1", "verdict": "correct", "question": None, "corrected_answer": "Three."},
        {"feedback_id": "f2", "example_id": "G-1", "verdict": "correct", "question": None, "corrected_answer": "3 boards."},
        {"feedback_id": "f3", "example_id": "S-9", "verdict": "correct", "question": "Move a board?", "corrected_answer": "Use Move board."},
        {"feedback_id": "f4", "example_id": "S-10", "verdict": "correct", "question": None, "corrected_answer": "No question given."},
        {"feedback_id": "f5", "example_id": "S-11", "verdict": "approve", "question": "Q", "corrected_answer": None},
    ]
    assert golden_corrections(rows, {"G-1", "G-2"}) == {"G-1": "3 boards."}
    [doc] = training_documents(rows, {"G-1", "G-2"})
    assert doc["external_id"] == "S-9" and doc["kind"] == "instruction" and "Use Move board." in doc["messages"]


def test_a_request_log_from_before_reviews_is_migrated_its_feedback_pending(tmp_path):
    """A request log written before feedback needed review gains the review columns when opened; what it held
    stays pending (never silently approved into a dataset)."""
    import sqlite3

    from resources.requestlog import RequestLog, RequestLogSource

    db = tmp_path / "requests.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TIMESTAMP NOT NULL, "
                     "response_id VARCHAR(64) NOT NULL, client VARCHAR(128) NOT NULL, rating VARCHAR(8), "
                     "corrected_answer TEXT, comment TEXT)")
        conn.execute("INSERT INTO feedback (created_at, response_id, client, rating, corrected_answer) "
                     "VALUES ('2026-11-30 10:00:00', 'r1', 'old-client', 'down', 'an old correction')")
    log = RequestLog(f"sqlite:///{db}")
    log.record({"id": "r1", "client": "old-client", "endpoint": "chat", "model": "support", "status": 200})
    [row] = log.feedback_rows()
    assert row["status"] == "pending" and row["reviewed_by"] is None
    assert RequestLogSource(database_url=f"sqlite:///{db}").feedback("support") == []
    log.review(row["id"], "approved", "dana")
    assert [r["corrected_answer"] for r in RequestLogSource(database_url=f"sqlite:///{db}").feedback("support")] == \
        ["an old correction"]


def test_the_request_log_file_is_for_its_owner_only(tmp_path):
    from resources.requestlog import RequestLog

    log = RequestLog(f"sqlite:///{tmp_path / 'serving' / 'requests.db'}")
    log.record({"id": "r1", "client": "c", "endpoint": "chat", "model": "m", "status": 200, "prompt_redacted": "hi"})
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "serving").iterdir()}
    assert modes["requests.db"] == "0o600" and all(m == "0o600" for m in modes.values()), modes


def test_model_server_and_gateway_logs_are_for_their_owner_only(tmp_path):
    """vLLM's and the gateway's logs can quote requests: created 0600, and an older 0644 log is tightened."""
    from resources.serving.vllm_server import open_server_log

    old = tmp_path / "state" / "gateway-1.log"
    old.parent.mkdir()
    old.write_text("before\n")
    old.chmod(0o644)
    for path in (tmp_path / "state" / "vllm-1.log", old):
        with open_server_log(path) as log:
            log.write(b"line\n")
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert old.read_text() == "before\nline\n"


def test_forget_removes_logged_answers_grounded_on_the_document_and_their_feedback(tmp_path):
    from resources.requestlog import RequestLog, feedback

    log = RequestLog(f"sqlite:///{tmp_path / 'requests.db'}")
    base = {"client": "c", "endpoint": "chat", "model": "support", "status": 200, "prompt_redacted": "q"}
    log.record({**base, "id": "r1", "source_documents": ["doc-a", "doc-b"]})
    log.record({**base, "id": "r2", "source_documents": ["doc-b"]})
    log.record({**base, "id": "r3"})  # not grounded
    for rid, status in (("r1", "approved"), ("r1", "pending"), ("r2", "pending")):
        fid = log.record_feedback({"response_id": rid, "client": "c", "rating": "down", "corrected_answer": "x"})
        if status != "pending":
            log.review(fid, status, "dana")
    assert log.forget_documents({"doc-a"}, apply=False) == {"requests": 1, "feedback": 2}
    assert log.count() == 3  # counting deletes nothing
    assert log.forget_documents({"doc-a"}) == {"requests": 1, "feedback": 2}
    assert sorted(r["id"] for r in log.rows()) == ["r2", "r3"]
    assert [r["response_id"] for r in log.rows(table=feedback)] == ["r2"]
    assert log.forget_documents({"doc-a"}) == {"requests": 0, "feedback": 0}
