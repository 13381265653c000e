"""`RequestLogSource`: the gateway's request log, read per day for the monitoring assets."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy import select

from resources.serving.gateway.request_log import RequestLog, feedback, requests

TRAFFIC_COLUMNS = ["id", "created_at", "client", "model", "adapter_version", "status", "latency_ms", "upstream_ms",
                   "prompt_tokens", "completion_tokens", "input_guard", "output_guard", "prompt_redacted"]


class RequestLogSource(ConfigurableResource):
    """Where the gateway logs requests (the same URL as GatewayServer.database_url)."""

    database_url: str = Field(default="sqlite:///.tuneforge/serving/requests.db",
                              description="SQLAlchemy URL of the gateway's request log (Postgres in production).")

    def _log(self) -> RequestLog | None:
        url = self.database_url
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            return None  # nothing served yet
        return RequestLog(url)

    def day(self, day: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Requests and feedback of one UTC day."""
        log = self._log()
        if log is None:
            return pd.DataFrame(columns=TRAFFIC_COLUMNS), pd.DataFrame(columns=["response_id", "rating", "corrected_answer"])
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
        end = start + dt.timedelta(days=1)
        with log.engine.connect() as conn:
            reqs = pd.DataFrame(conn.execute(select(*(requests.c[c] for c in TRAFFIC_COLUMNS)).where(
                requests.c.created_at >= start, requests.c.created_at < end)).mappings().all(), columns=TRAFFIC_COLUMNS)
            fb = pd.DataFrame(conn.execute(select(feedback.c.response_id, feedback.c.rating, feedback.c.corrected_answer).where(
                feedback.c.created_at >= start, feedback.c.created_at < end)).mappings().all(),
                columns=["response_id", "rating", "corrected_answer"])
        return reqs, fb


def summarise(reqs: pd.DataFrame, fb: pd.DataFrame) -> dict:
    """Volume, latency percentiles, tokens, guard triggers and feedback, overall and per adapter."""
    def block(frame: pd.DataFrame, votes: pd.DataFrame) -> dict:
        ok = frame[frame["status"] == 200]
        latency = ok["latency_ms"].dropna().to_numpy()
        guards: dict[str, int] = {}
        for column in ("input_guard", "output_guard"):
            for found in frame[column].dropna():
                for kind, n in (found or {}).items():
                    guards[f"{column.split('_')[0]}:{kind}"] = guards.get(f"{column.split('_')[0]}:{kind}", 0) + int(n)
        return {
            "requests": int(len(frame)), "errors_5xx": int((frame["status"] >= 500).sum()),
            "refused_4xx": int(((frame["status"] >= 400) & (frame["status"] < 500)).sum()),
            "latency_p50_ms": float(np.percentile(latency, 50)) if len(latency) else None,
            "latency_p95_ms": float(np.percentile(latency, 95)) if len(latency) else None,
            "prompt_tokens": int(ok["prompt_tokens"].fillna(0).sum()), "completion_tokens": int(ok["completion_tokens"].fillna(0).sum()),
            "guard_triggers": guards,
            "feedback_up": int((votes["rating"] == "up").sum()), "feedback_down": int((votes["rating"] == "down").sum()),
            "corrections": int(votes["corrected_answer"].notna().sum()),
        }

    joined = fb.merge(reqs[["id", "adapter_version"]], left_on="response_id", right_on="id", how="left")
    per_adapter = {str(v): block(reqs[reqs["adapter_version"] == v], joined[joined["adapter_version"] == v])
                   for v in sorted(reqs["adapter_version"].dropna().unique())}
    return {"overall": block(reqs, fb), "per_adapter": per_adapter}
