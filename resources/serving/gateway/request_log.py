"""The gateway's request log and feedback, in a real database through SQLAlchemy (SQLite by default,
Postgres by URL). Prompts and responses are stored redacted; guard decisions as JSON counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (JSON, Column, DateTime, Float, Integer, MetaData, String, Table, Text, create_engine, func,
                        insert, select)

metadata = MetaData()

requests = Table(
    "requests", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("client", String(128), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("model", String(256)),
    Column("upstream_model", String(256)),
    Column("adapter_version", String(64)),
    Column("status", Integer, nullable=False),
    Column("latency_ms", Float),
    Column("upstream_ms", Float),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("input_guard", JSON),
    Column("output_guard", JSON),
    Column("prompt_redacted", Text),
    Column("response_redacted", Text),
    Column("error", Text),
)

feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("response_id", String(64), nullable=False, index=True),
    Column("client", String(128), nullable=False),
    Column("rating", String(8)),  # up | down
    Column("corrected_answer", Text),
    Column("comment", Text),
)


class RequestLog:
    def __init__(self, url: str):
        args = {"check_same_thread": False} if url.startswith("sqlite") else {}
        self.engine = create_engine(url, connect_args=args, pool_pre_ping=True)
        if url.startswith("sqlite"):
            with self.engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        metadata.create_all(self.engine)

    @staticmethod
    def now() -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def record(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(requests).values({"created_at": self.now(), **row}))

    def record_feedback(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(feedback).values({"created_at": self.now(), **row}))

    def get(self, response_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(requests).where(requests.c.id == response_id)).mappings().first()
        return dict(row) if row else None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(requests)).scalar_one())

    def rows(self, table: Table = requests) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(table)).mappings()]


def endpoint_feedback(url: str) -> list[dict[str, Any]]:
    """Feedback given through the gateway's /v1/feedback, as reviewer-feedback records: thumbs up ->
    approve, down -> reject, a corrected answer -> correct (with the logged, redacted prompt as question)."""
    log = RequestLog(url)
    with log.engine.connect() as conn:
        joined = conn.execute(
            select(feedback, requests.c.prompt_redacted).join(requests, requests.c.id == feedback.c.response_id)
            .order_by(feedback.c.id)).mappings().all()
    out = []
    for row in joined:
        verdict = "correct" if row["corrected_answer"] else {"up": "approve", "down": "reject"}[row["rating"]]
        out.append({"feedback_id": f"endpoint-{row['id']}", "example_id": row["response_id"], "verdict": verdict,
                    "question": row["prompt_redacted"] if verdict == "correct" else None,
                    "corrected_answer": row["corrected_answer"], "reviewer": f"endpoint:{row['client']}",
                    "source_path": "gateway", "line": row["id"]})
    return out
