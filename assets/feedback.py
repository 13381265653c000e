"""Human feedback: reviewer labels on a model's answers, validated and redacted."""

from collections import Counter
from pathlib import Path

from dagster import AssetExecutionContext, AutomationCondition, MetadataValue, Output, asset

from assets.metadata import asset_args, emit, key, ledger_metadata, log_quarantine, reason_table
from resources.artifacts import Artifact, version_of
from resources.evaluation.feedback import FEEDBACK_COLUMNS, read_feedback
from resources.records import Ledger, fingerprint, frame
from resources.redaction.redactor import PiiRedactor
from resources.requestlog import RequestLogSource
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json, write_table


def build(spec: ModelSpec) -> list:
    @asset(key=key(spec, "human_feedback"), kinds={"parquet"}, code_version="2",
           automation_condition=AutomationCondition.on_missing(),  # so the datasets' eager conditions can start
           **asset_args(spec, "feedback"))
    def human_feedback(context: AssetExecutionContext, request_log: RequestLogSource, redactor: PiiRedactor,
                       store: ArtifactStore) -> Output[Artifact]:
        """Reviewer labels (approve, reject, correct) on this model's golden and served answers — the model's
        feedback folder and what clients sent through the gateway's /v1/feedback — with questions and
        corrections redacted under the model's redaction policy; bad records are quarantined with file, line
        and reason. Corrections flow into the next golden set or training set by the rule in the README."""
        folder = Path(spec.feedback) if spec.feedback else None
        records, quarantine = read_feedback(folder) if folder is not None and folder.is_dir() else ([], [])
        records += request_log.feedback(spec.name)
        log_quarantine(context.log, quarantine, what="feedback record", where="quarantine.json")
        model_redactor = redactor.for_policy(spec.redaction_policy, spec.public_entities)
        model_redactor.redact_fields(records, ("question", "corrected_answer"))
        table = frame(records, FEEDBACK_COLUMNS)
        ledger = Ledger(stage="human_feedback", kept=len(table), quarantined=Counter(q["reason"] for q in quarantine))
        ledger.records_in = ledger.kept + sum(ledger.quarantined.values())
        version = version_of(fingerprint(table, ["feedback_id", "example_id", "verdict", "question", "corrected_answer"]),
                             config=[model_redactor.policy().content_hash(), len(quarantine)])
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            write_table(out, "feedback.parquet", table)
            write_json(out, "quarantine.json", quarantine)
            write_json(out, "ledger.json", ledger.to_dict())
        verdicts = Counter(table["verdict"]) if len(table) else Counter()
        return emit(artifact, {
            **ledger_metadata(ledger),
            "by_verdict": reason_table(verdicts, header="verdict"),
            "approval_rate": MetadataValue.float(verdicts["approve"] / max(1, sum(verdicts.values()))),
            "reviewers": MetadataValue.int(table["reviewer"].nunique() if len(table) else 0),
        })

    return [human_feedback]
