"""`PiiRedactor`: the Dagster resource in front of the Presidio redaction engine."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

from pydantic import Field

from resources.preflight import CheckedResource, problem
from resources.records import Ledger, segments, with_segments
from resources.redaction.engine import DEFAULT_SPACY_MODEL, NER_ONLY, ModelNotInstalledError, RedactionEngine, require_spacy_model
from resources.redaction.policy import RedactionPolicy


@dataclass
class DocumentRedaction:
    documents: list[dict[str, Any]] = field(default_factory=list)
    audit: Counter = field(default_factory=Counter)  # entity type -> count, never values
    ledger: Ledger = field(default_factory=lambda: Ledger(stage="redacted_documents"))
    quarantined: list[dict[str, Any]] = field(default_factory=list)  # QUARANTINE_COLUMNS rows, never the text
    by_file: dict[str, Counter] = field(default_factory=dict)  # source file -> entity type -> count (kept documents)


class PiiRedactor(CheckedResource):
    """Finds and replaces PII under a versioned redaction policy (Presidio + spaCy, batched)."""

    policy_path: str = Field(
        default="policies/redaction.yaml", description="YAML redaction policy (entities, thresholds, operators)."
    )
    spacy_model: str = Field(
        default=DEFAULT_SPACY_MODEL,
        description="Installed spaCy model package or model folder. Never downloaded at run time.",
    )
    spacy_exclude: list[str] = Field(
        default=list(NER_ONLY),
        description="spaCy components not run. The default runs NER only (lemmas from lower-cased tokens); "
        "set [] to run the model's whole pipeline.",
    )
    public_entities: list[str] = Field(default_factory=list, description="Names kept beside the policy's allow list "
                                       "(a model's `public_entities`; set per model by `for_policy`).")
    batch_size: int = Field(default=64, gt=0, description="Texts per spaCy nlp.pipe batch.")
    n_process: int = Field(default=1, gt=0, description="Processes that analyse texts side by side (this one and "
                           "n_process - 1 workers, each with its own engine; 2 uses both cores of a laptop).")
    pseudonym_key: str | None = Field(
        default=None,
        description="Secret for consistent pseudonyms (policy operator `pseudonym`); set via EnvVar.",
    )

    def for_policy(self, policy_path: str, public_entities: list[str] | tuple[str, ...] = ()) -> "PiiRedactor":
        """These engine settings under another redaction policy (each model names its own), keeping the model's
        public entities."""
        return self.model_copy(update={"policy_path": policy_path, "public_entities": list(public_entities)})

    def policy(self) -> RedactionPolicy:
        """The policy file, with this model's public entities added to its allow list."""
        policy = RedactionPolicy.load(self.policy_path)
        extra = [e for e in self.public_entities if e not in policy.allow_list]
        return policy.model_copy(update={"allow_list": [*policy.allow_list, *extra]}) if extra else policy

    def problems(self) -> list[str]:
        found = []
        try:
            self.policy()
        except (OSError, ValueError) as err:
            found.append(problem(self, "policy_path", self.policy_path, str(err)))
        try:
            require_spacy_model(self.spacy_model)
        except ModelNotInstalledError as err:
            found.append(problem(self, "spacy_model", self.spacy_model, str(err)))
        return found

    def engine(self) -> RedactionEngine:
        return _engine(
            self.policy().model_dump_json(), self.spacy_model, self.batch_size, self.n_process, self.pseudonym_key,
            tuple(self.spacy_exclude),
        )

    def redact_documents(self, documents: Iterable[dict[str, Any]]) -> DocumentRedaction:
        """Redact every segment (text, or each message) of every document, in one batched pass. A document that
        still holds findings after the engine's last re-scan is quarantined (`residual_pii`, with the entity counts,
        never the text) instead of kept: one record never blocks its batch."""
        documents = list(documents)
        pieces = [segments(doc) for doc in documents]
        titles = [doc.get("title") or "" for doc in documents]
        flat = [s for piece in pieces for s in piece] + titles
        redactions = iter(self.engine().redact(flat))
        result = DocumentRedaction()
        result.ledger.records_in = len(documents)
        redacted = [(doc, [next(redactions) for _ in piece]) for doc, piece in zip(documents, pieces)]
        for (doc, done), title in zip(redacted, redactions):  # titles come last in `flat`
            counts = sum((r.counts for r in done), Counter())
            result.audit.update(counts)
            out = with_segments(doc, [r.text for r in done])
            out["title"] = title.text if doc.get("title") else doc.get("title")
            residual = sum((r.residual for r in [*done, title]), Counter())
            if residual:
                result.ledger.quarantined["residual_pii"] += 1
                result.quarantined.append({
                    "batch": doc.get("batch"), "source_path": doc.get("source_path"),
                    "source_sha256": doc.get("source_sha256"), "line": doc.get("line"), "reason": "residual_pii",
                    "detail": f"doc {doc.get('doc_id')}: still found after redaction: "
                              + ", ".join(f"{e} x{n}" for e, n in sorted(residual.items())),
                })
                continue
            result.documents.append({**out, "pii_found": sum(counts.values())})
            if counts:
                result.by_file.setdefault(str(doc.get("source_path") or doc.get("doc_id")), Counter()).update(counts)
        result.ledger.kept = len(result.documents)
        return result

    def redact_fields(self, records: list[dict[str, Any]], fields: tuple[str, ...]) -> Counter:
        """Redact `fields` of every record in place, in one batched pass (None and "" stay as they are);
        returns the replacements per entity type."""
        places = [(r, f) for r in records for f in fields if r.get(f)]
        found = Counter()
        for (record, name), redacted in zip(places, self.engine().redact([r[f] for r, f in places])):
            record[name] = redacted.text
            found.update(redacted.counts)
        return found

    def residual_findings(self, texts: list[str]) -> Counter:
        """Entity counts a second scan still finds above the policy thresholds (should be none)."""
        found = Counter()
        for findings in self.engine().analyze(texts):
            found.update(r.entity_type for r in findings)
        return found

    def disclosed(self, answer: str, prompt: str) -> Counter:
        """Entity counts of what `answer` reveals that `prompt` did not give: a finding whose text the prompt
        already holds ("I'm DAN" to "Pretend you are DAN ...") repeats the asker's words and discloses nothing."""
        given = " ".join(prompt.casefold().split())
        return Counter(r.entity_type for r in self.engine().analyze([answer])[0]
                       if " ".join(answer[r.start : r.end].casefold().split()) not in given)

    def residual_in_documents(self, documents: list[dict[str, Any]]) -> list[Counter]:
        """Per document, the entities a second scan still finds in the pieces `redact_documents` redacted (each
        message or the text, and the title): scanning a re-joined text instead would judge spans the redaction
        never saw (a question's last word and the answer's first read as one name)."""
        pieces = [[*segments(doc), *([doc["title"]] if doc.get("title") else [])] for doc in documents]
        findings = iter(self.engine().analyze([p for piece in pieces for p in piece]))
        return [sum((Counter(r.entity_type for r in next(findings)) for _ in piece), Counter()) for piece in pieces]


@lru_cache(maxsize=4)
def _engine(policy_json: str, spacy_model: str, batch_size: int, n_process: int, key: str | None, exclude: tuple):
    """One loaded engine per process and configuration (spaCy load takes seconds)."""
    policy = RedactionPolicy.model_validate_json(policy_json)
    return RedactionEngine(policy, spacy_model, batch_size, n_process, key, exclude)
