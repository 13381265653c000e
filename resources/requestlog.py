"""The gateway's request log and feedback, in a real database through SQLAlchemy (SQLite by default,
Postgres by URL). Prompts and responses are stored redacted; guard decisions as JSON counts.

The gateway writes it; the monitoring stage (traffic per day) and the evaluation stage (feedback given through
`/v1/feedback`) read it, each for one model, through `RequestLogSource`, the one place its URL is configured.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field
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
    # the documents (doc_id) of the passages the answer was grounded on: forget finds the rows that quote one
    Column("source_documents", JSON),
    Column("grounding", JSON),  # the grounding check's verdicts (counts per verdict), or the low-retrieval abstention
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
    # pending until a reviewer (another client with the reviewer scope, or `tuneforge feedback`) decides;
    # only approved feedback reaches a golden or training set
    Column("status", String(16), nullable=False, server_default="pending", index=True),
    Column("reviewed_by", String(128)),
    Column("reviewed_at", DateTime(timezone=True)),
)

REVIEW_STATUSES = ("pending", "approved", "rejected")


def _migrate(engine) -> None:
    """Add the columns a log made by an older gateway lacks: feedback review (its rows stay pending), the requests'
    source documents and grounding verdicts (unknown for old rows)."""
    from sqlalchemy import inspect, text

    postgres = engine.dialect.name == "postgresql"
    added = {"feedback": {"status": "VARCHAR(16) NOT NULL DEFAULT 'pending'", "reviewed_by": "VARCHAR(128)",
                          "reviewed_at": "TIMESTAMP WITH TIME ZONE" if postgres else "TIMESTAMP"},
             "requests": {"source_documents": "JSON", "grounding": "JSON"}}
    with engine.begin() as conn:
        for table, columns in added.items():
            have = {c["name"] for c in inspect(conn).get_columns(table)}
            for name, kind in columns.items():
                if name not in have:
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))


class RequestLog:
    def __init__(self, url: str):
        if url.startswith("sqlite:///"):  # a SQLite file: its folder is made on first use
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        args = {"check_same_thread": False} if url.startswith("sqlite") else {}
        self.engine = create_engine(url, connect_args=args, pool_pre_ping=True)
        if url.startswith("sqlite"):
            with self.engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        metadata.create_all(self.engine)
        _migrate(self.engine)
        if url.startswith("sqlite:///"):  # prompts and responses, even redacted, are for the owner only
            for suffix in ("", "-wal", "-shm"):
                path = Path(url.removeprefix("sqlite:///") + suffix)
                if path.exists():
                    path.chmod(0o600)

    @staticmethod
    def now() -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def record(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(requests).values({"created_at": self.now(), **row}))

    def record_feedback(self, row: dict[str, Any]) -> int:
        """Store one feedback (pending unless the row says otherwise); its id."""
        with self.engine.begin() as conn:
            return int(conn.execute(insert(feedback).values({"created_at": self.now(), **row})).inserted_primary_key[0])

    def feedback_rows(self, status: str | None = None, model: str | None = None,
                      feedback_id: int | None = None) -> list[dict[str, Any]]:
        """Feedback with the model that gave the answer, oldest first; optionally one status, model or id."""
        query = select(feedback, requests.c.model).join(requests, requests.c.id == feedback.c.response_id)
        if status is not None:
            query = query.where(feedback.c.status == status)
        if model is not None:
            query = query.where(requests.c.model == model)
        if feedback_id is not None:
            query = query.where(feedback.c.id == feedback_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query.order_by(feedback.c.id)).mappings()]

    def review(self, feedback_id: int, decision: str, reviewer: str) -> dict[str, Any]:
        """Approve or reject one pending feedback; the client that sent it can never review it. Raises
        LookupError (no such pending feedback) or PermissionError (the reviewer sent it)."""
        from sqlalchemy import update

        if decision not in ("approved", "rejected"):
            raise ValueError(f"decision must be approved or rejected, not {decision!r}")
        with self.engine.begin() as conn:
            row = conn.execute(select(feedback).where(feedback.c.id == feedback_id)).mappings().first()
            if row is None or row["status"] != "pending":
                raise LookupError(f"no pending feedback {feedback_id}")
            if reviewer in (row["client"], f"endpoint:{row['client']}"):
                raise PermissionError(f"feedback {feedback_id} was sent by {row['client']}: another reviewer decides on it")
            conn.execute(update(feedback).where(feedback.c.id == feedback_id, feedback.c.status == "pending")
                         .values(status=decision, reviewed_by=reviewer, reviewed_at=self.now()))
        return {**dict(row), "status": decision, "reviewed_by": reviewer}

    def prune(self, retention_days: float | None = None, max_rows: int | None = None, batch: int = 500,
              now: dt.datetime | None = None) -> dict[str, int]:
        """Apply the retention: delete requests older than `retention_days` and those beyond the newest `max_rows`,
        with the pending and rejected feedback on them (the client's words must not outlive the request they
        were about). A request that approved feedback refers to is kept as long as that feedback is: approved
        feedback is training data, removed only by its own purge (`purge_feedback`), and its request row stays
        with it (the model that answered, the prompt a correction is paired with); such rows do not count
        towards `max_rows`. Deletes in batches of `batch` rows, one short transaction each, so the gateway's
        writes are never held up for long. Returns how many rows went from each table."""
        from sqlalchemy import and_, delete, exists, or_

        deleted = {"requests": 0, "feedback": 0}
        if retention_days is None and max_rows is None:
            return deleted
        approved = exists().where(feedback.c.response_id == requests.c.id, feedback.c.status == "approved")
        conditions = []
        cutoff = None
        if retention_days is not None:
            cutoff = (now or self.now()) - dt.timedelta(days=retention_days)
            conditions.append(requests.c.created_at < cutoff)
        if max_rows is not None:
            with self.engine.connect() as conn:  # the newest row past the limit: it and everything older goes
                edge = conn.execute(select(requests.c.created_at, requests.c.id).where(~approved)
                                    .order_by(requests.c.created_at.desc(), requests.c.id.desc())
                                    .offset(max(0, int(max_rows))).limit(1)).first()
            if edge is not None:
                conditions.append(or_(requests.c.created_at < edge.created_at,
                                      and_(requests.c.created_at == edge.created_at, requests.c.id <= edge.id)))
        if not conditions:
            return deleted
        due = and_(~approved, or_(*conditions))
        while True:
            with self.engine.begin() as conn:
                ids = list(conn.execute(select(requests.c.id).where(due).limit(batch)).scalars())
                if not ids:
                    break
                deleted["feedback"] += conn.execute(delete(feedback).where(
                    feedback.c.response_id.in_(ids), feedback.c.status != "approved")).rowcount
                deleted["requests"] += conn.execute(delete(requests).where(requests.c.id.in_(ids), ~approved)).rowcount
            if len(ids) < batch:
                break
        if cutoff is not None:  # feedback past the retention whose request is gone (sent as its request was pruned)
            with self.engine.begin() as conn:
                deleted["feedback"] += conn.execute(delete(feedback).where(
                    feedback.c.status != "approved", feedback.c.created_at < cutoff,
                    ~exists().where(requests.c.id == feedback.c.response_id))).rowcount
        return deleted

    def forget_documents(self, doc_ids: set[str], apply: bool = True) -> dict[str, int]:
        """The requests whose answers were grounded on any of `doc_ids` (and the feedback on them, whatever its
        status: a correction may repeat the passage): deleted with `apply`, else only counted. Rows logged before
        the log kept source documents cannot be traced and stay (see the README's forget section)."""
        from sqlalchemy import delete

        with self.engine.connect() as conn:
            rows = conn.execute(select(requests.c.id, requests.c.source_documents)
                                .where(requests.c.source_documents.is_not(None))).all()
        ids = [rid for rid, docs in rows if set(docs or ()) & set(doc_ids)]
        found = {"requests": len(ids), "feedback": 0}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            with self.engine.begin() as conn:
                if apply:
                    found["feedback"] += conn.execute(delete(feedback).where(feedback.c.response_id.in_(part))).rowcount
                    conn.execute(delete(requests).where(requests.c.id.in_(part)))
                else:
                    found["feedback"] += int(conn.execute(select(func.count()).select_from(feedback)
                                                          .where(feedback.c.response_id.in_(part))).scalar_one())
        return found

    def purge_feedback(self, client: str) -> int:
        """Delete every feedback a client sent (its origin is on each row); how many."""
        from sqlalchemy import delete

        with self.engine.begin() as conn:
            return conn.execute(delete(feedback).where(feedback.c.client == client)).rowcount

    def feedback_since(self, client: str, seconds: float) -> int:
        """How many feedbacks `client` sent in the last `seconds` (the gateway's feedback rate limit)."""
        since = self.now() - dt.timedelta(seconds=seconds)
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(feedback).where(
                feedback.c.client == client, feedback.c.created_at >= since)).scalar_one())

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


def endpoint_feedback(url: str, model: str | None = None) -> list[dict[str, Any]]:
    """Approved feedback given through the gateway's /v1/feedback (on `model`'s answers, or all), as
    reviewer-feedback records: thumbs up -> approve, down -> reject, a corrected answer -> correct (with the
    logged, redacted prompt as question). Pending and rejected feedback never reaches a dataset."""
    log = RequestLog(url)
    query = select(feedback, requests.c.prompt_redacted).join(requests, requests.c.id == feedback.c.response_id) \
        .where(feedback.c.status == "approved")
    if model is not None:
        query = query.where(requests.c.model == model)
    with log.engine.connect() as conn:
        joined = conn.execute(query.order_by(feedback.c.id)).mappings().all()
    out = []
    for row in joined:
        verdict = "correct" if row["corrected_answer"] else {"up": "approve", "down": "reject"}[row["rating"]]
        out.append({"feedback_id": f"endpoint-{row['id']}", "example_id": row["response_id"], "verdict": verdict,
                    "question": row["prompt_redacted"] if verdict == "correct" else None,
                    "corrected_answer": row["corrected_answer"],
                    "reviewer": f"endpoint:{row['client']} (approved by {row['reviewed_by']})",
                    "source_path": "gateway", "line": row["id"]})
    return out


TRAFFIC_COLUMNS = ["id", "created_at", "client", "model", "adapter_version", "status", "latency_ms", "upstream_ms",
                   "prompt_tokens", "completion_tokens", "input_guard", "output_guard", "grounding", "prompt_redacted"]
FEEDBACK_COLUMNS = ["response_id", "rating", "corrected_answer"]


class RequestLogSource(ConfigurableResource):
    """Where the gateway logs requests and feedback: the gateway writes here, monitoring and feedback read here."""

    database_url: str = Field(default="sqlite:///.tuneforge/serving/requests.db",
                              description="SQLAlchemy URL of the request log (Postgres in production, e.g. "
                              "EnvVar('TUNEFORGE_REQUEST_LOG_URL')); a SQLite file is created on first use.")
    retention_days: float | None = Field(default=90.0, description="Requests older than this many days are deleted "
                                         "by the gateway, with the pending and rejected feedback on them (None: kept "
                                         "forever). Approved feedback and the requests it refers to stay until the "
                                         "feedback's own purge (`tuneforge feedback purge`).")
    max_rows: int | None = Field(default=None, description="At most this many requests are kept, the oldest deleted "
                                 "first, as retention_days deletes them (None: no cap); requests that approved "
                                 "feedback refers to are kept besides.")

    def _log(self) -> RequestLog | None:
        url = self.database_url
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            return None  # nothing served yet
        return RequestLog(url)

    def day(self, day: dt.date, model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Requests and feedback of one UTC day for one served model."""
        log = self._log()
        if log is None:
            return pd.DataFrame(columns=TRAFFIC_COLUMNS), pd.DataFrame(columns=FEEDBACK_COLUMNS)
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
        end = start + dt.timedelta(days=1)
        with log.engine.connect() as conn:
            reqs = pd.DataFrame(conn.execute(select(*(requests.c[c] for c in TRAFFIC_COLUMNS)).where(
                requests.c.created_at >= start, requests.c.created_at < end, requests.c.model == model)).mappings().all(),
                columns=TRAFFIC_COLUMNS)
            fb = pd.DataFrame(conn.execute(
                select(feedback.c.response_id, feedback.c.rating, feedback.c.corrected_answer)
                .join(requests, requests.c.id == feedback.c.response_id)
                .where(feedback.c.created_at >= start, feedback.c.created_at < end, requests.c.model == model)
            ).mappings().all(), columns=FEEDBACK_COLUMNS)
        return reqs, fb

    def feedback(self, model: str) -> list[dict[str, Any]]:
        """Feedback given through the gateway on `model`'s answers (see `endpoint_feedback`)."""
        return endpoint_feedback(self.database_url, model) if self._log() is not None else []

    def prune(self) -> dict[str, int]:
        """Apply `retention_days` and `max_rows` now (the gateway does it on its own, see RequestLog.prune)."""
        log = self._log()
        return log.prune(self.retention_days, self.max_rows) if log is not None else {"requests": 0, "feedback": 0}
