"""`AlertSink`: where failed runs are reported — an append-only JSONL file, and a webhook if configured
(Slack, PagerDuty, Opsgenie and most chat tools accept a JSON POST)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
from dagster import ConfigurableResource
from pydantic import Field, field_validator

from resources.preflight import check_http_url


class AlertSink(ConfigurableResource):
    path: str = Field(default=".tuneforge/alerts/run_failures.jsonl", description="Append-only log of failed runs.")
    webhook_url: str | None = Field(
        default=None, description="POST each alert as JSON here (e.g. EnvVar('TUNEFORGE_ALERT_WEBHOOK')); unset: file only."
    )
    timeout_s: float = Field(default=10.0, description="Webhook timeout; a failing webhook is recorded, never raised.")

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _webhook(cls, value):
        return check_http_url("AlertSink", "webhook_url", value)

    def send(self, alert: dict) -> dict:
        record = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **alert}
        if self.webhook_url:
            try:
                response = httpx.post(self.webhook_url, json=record, timeout=self.timeout_s)
                record["webhook_status"] = response.status_code
            except httpx.HTTPError as err:
                record["webhook_error"] = f"{type(err).__name__}: {err}"
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return record
