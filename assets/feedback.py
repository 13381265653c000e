"""Human feedback: reviewer labels on model answers, validated and redacted."""

from collections import Counter

from dagster import AssetExecutionContext, AutomationCondition, DataVersion, MaterializeResult, MetadataValue, asset

from assets.metadata import ledger_metadata, reason_table
from resources.evaluation.feedback import FEEDBACK_COLUMNS, FeedbackSource
from resources.records import Ledger, fingerprint, frame, rows
from resources.redaction.redactor import PiiRedactor
from resources.storage import ArtifactStore, write_json, write_table

FEEDBACK_VERSION = "current"


@asset(
    group_name="evaluation",
    kinds={"parquet"},
    code_version="1",
    automation_condition=AutomationCondition.on_missing(),  # so the datasets' eager conditions can start
)
def human_feedback(
    context: AssetExecutionContext, feedback: FeedbackSource, redactor: PiiRedactor, store: ArtifactStore
) -> MaterializeResult:
    """Reviewer labels (approve, reject, correct) on golden and served answers, with questions and
    corrections redacted under the redaction policy; bad records are quarantined with file, line and
    reason. Corrections flow into the next golden set or training set by the rule in README."""
    rows, quarantine = feedback.read()
    for row in quarantine:
        context.log.warning(f"feedback quarantined ({row['reason']}): {row['detail']}")
    texts = [t for r in rows for t in (r["question"] or "", r["corrected_answer"] or "")]
    redacted = iter(r.text for r in redactor.engine().redact(texts)) if texts else iter(())
    for row in rows:
        question, answer = next(redacted), next(redacted)
        row["question"], row["corrected_answer"] = question or None, answer or None
    table = frame(rows, FEEDBACK_COLUMNS)
    ledger = Ledger(stage="human_feedback", kept=len(table), quarantined=Counter(q["reason"] for q in quarantine))
    ledger.records_in = ledger.kept + sum(ledger.quarantined.values())
    with store.writing("human_feedback", FEEDBACK_VERSION) as out:
        write_table(out, "feedback.parquet", table)
        write_json(out, "quarantine.json", quarantine)
        write_json(out, "ledger.json", ledger.to_dict())
    verdicts = Counter(table["verdict"]) if len(table) else Counter()
    return MaterializeResult(
        metadata={
            **ledger_metadata(ledger),
            "by_verdict": reason_table(verdicts, header="verdict"),
            "approval_rate": MetadataValue.float(verdicts["approve"] / max(1, sum(verdicts.values()))),
            "reviewers": MetadataValue.int(table["reviewer"].nunique() if len(table) else 0),
        },
        data_version=DataVersion(fingerprint(table, ["feedback_id", "verdict", "corrected_answer"])),
    )


def stored_feedback(store: ArtifactStore) -> list[dict]:
    """The validated, redacted feedback, or none if human_feedback was never materialized."""
    if not store.exists("human_feedback", FEEDBACK_VERSION, "feedback.parquet"):
        return []
    return rows(store.read_table("human_feedback", FEEDBACK_VERSION, "feedback.parquet"))
