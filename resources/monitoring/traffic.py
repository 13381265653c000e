"""Serving traffic of one day, summarised: volume, errors, latency, tokens, guard triggers, the grounding check's
verdicts, feedback."""

from __future__ import annotations

import numpy as np
import pandas as pd


def summarise(reqs: pd.DataFrame, fb: pd.DataFrame) -> dict:
    """Volume, latency percentiles, tokens, guard triggers and feedback, overall and per adapter."""
    def block(frame: pd.DataFrame, votes: pd.DataFrame) -> dict:
        ok = frame[frame["status"] == 200]
        latency = ok["latency_ms"].dropna().to_numpy()
        guards: dict[str, int] = {}
        grounding: dict[str, int] = {}  # the answer path's verdicts: grounded, recited, unsupported, low_retrieval, ...
        for found in frame["grounding"].dropna() if "grounding" in frame else []:
            for verdict, n in (found or {}).items():
                grounding[verdict] = grounding.get(verdict, 0) + int(n)
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
            "guard_triggers": guards, "grounding": grounding,
            "feedback_up": int((votes["rating"] == "up").sum()), "feedback_down": int((votes["rating"] == "down").sum()),
            "corrections": int(votes["corrected_answer"].notna().sum()),
        }

    joined = fb.merge(reqs[["id", "adapter_version"]], left_on="response_id", right_on="id", how="left")
    per_adapter = {str(v): block(reqs[reqs["adapter_version"] == v], joined[joined["adapter_version"] == v])
                   for v in sorted(reqs["adapter_version"].dropna().unique())}
    return {"overall": block(reqs, fb), "per_adapter": per_adapter}
