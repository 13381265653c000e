"""The redaction policy: a versioned YAML document, validated in one place."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

Operator = Literal["placeholder", "pseudonym", "mask", "hash", "redact"]


ACRONYMS_FILE = Path(__file__).with_name("acronyms.txt")


def _shipped_acronyms() -> list[str]:
    lines = ACRONYMS_FILE.read_text(encoding="utf-8").splitlines()
    return [w.strip().upper() for line in lines for w in line.split("#", 1)[0].split() if w.strip()]


class CustomPattern(BaseModel):
    """A regex recognizer for an identifier Presidio does not know (internal ids, ticket numbers)."""

    entity: str = Field(description="Entity type the pattern reports, e.g. EMPLOYEE_ID (upper snake case).")
    regex: str = Field(description="Python regular expression for one occurrence.")
    score: float = Field(default=0.8, ge=0, le=1, description="Confidence reported for a match.")
    context: list[str] = Field(default_factory=list, description="Words near a match that raise its score.")

    @model_validator(mode="after")
    def _check(self) -> "CustomPattern":
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", self.entity):
            raise ValueError(f"custom pattern entity {self.entity!r} must be UPPER_SNAKE_CASE")
        try:
            re.compile(self.regex)
        except re.error as err:
            raise ValueError(f"custom pattern for {self.entity}: invalid regex {self.regex!r}: {err}") from None
        return self


class RedactionPolicy(BaseModel):
    """What is PII in our data, above which confidence, and what replaces it."""

    name: str = Field(description="Short policy name.")
    version: str = Field(description="Human version; bump on every change.")
    language: str = Field(default="en", description="Language of the documents (spaCy model language).")
    score_threshold: float = Field(default=0.5, ge=0, le=1, description="Findings below this score are kept.")
    entity_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per-entity score thresholds overriding `score_threshold`."
    )
    entities: list[str] = Field(min_length=1, description="Entity types to redact.")
    default_operator: Operator = Field(default="placeholder", description="Operator for entities not in `operators`.")
    operators: dict[str, Operator] = Field(default_factory=dict, description="Per-entity operator overrides.")
    allow_list: list[str] = Field(default_factory=list, description="Words never redacted.")
    custom_patterns: list[CustomPattern] = Field(default_factory=list, description="Extra regex recognizers.")
    acronyms: list[str] | None = Field(
        default=None,
        description="Upper-case words that are never a person's name on their own (the NER model tags some acronyms as "
        "PERSON). A PERSON finding made only of these words is discarded; names in capitals are kept. Unset: the "
        "shipped list (resources/redaction/acronyms.txt).",
    )

    unknown_single_names: Literal["need_context", "redact"] = Field(
        default="need_context",
        description="A person the NER model finds that is one word (\"Cycler\", \"Nest-asyncio\") or only words common in "
        "English (\"Upgrade Detect-secrets\"), none of them a given name or a common surname of the name lists: "
        "`need_context` redacts it only beside a word that marks a person (\"Dear\", \"Mr\", \"thanks\", \"by\", "
        "\"... wrote\", \"'s\"), so product and package names stay; `redact` redacts every such finding (more "
        "names the lists lack are caught, many more product names are lost).",
    )

    technical_text: bool = Field(
        default=True,
        description="Read person findings as technical text writes things (`engine._thing_not_person`): a finding "
        "with no given name or common surname of the name lists is not a person when it is markup or an identifier "
        "(a lower-case word, a single word in capitals), stands in code or on a Markdown heading line, is written "
        "in lower case elsewhere in the text (\"Dagster\" beside `pip install dagster`), or is two or more words "
        "the NER model found of which one is common English (\"Jaccard Threshold\"). false: only the rules above "
        "it judge a finding.",
    )

    @model_validator(mode="after")
    def _check(self) -> "RedactionPolicy":
        unknown = sorted(set(self.operators) - set(self.entities))
        if unknown:
            raise ValueError(f"operators name entities that are not in `entities`: {unknown}")
        unknown = sorted(set(self.entity_thresholds) - set(self.entities))
        if unknown:
            raise ValueError(f"entity_thresholds name entities that are not in `entities`: {unknown}")
        bad = {e: t for e, t in self.entity_thresholds.items() if not 0 <= t <= 1}
        if bad:
            raise ValueError(f"entity_thresholds must lie within [0, 1]: {bad}")
        missing = sorted({p.entity for p in self.custom_patterns} - set(self.entities))
        if missing:
            raise ValueError(f"custom_patterns report entities missing from `entities` (they would never apply): {missing}")
        return self

    def acronym_list(self) -> list[str]:
        if self.acronyms is not None:
            return [a.upper() for a in self.acronyms]
        return _shipped_acronyms()

    def operator_for(self, entity: str) -> Operator:
        return self.operators.get(entity, self.default_operator)

    def threshold_for(self, entity: str) -> float:
        return self.entity_thresholds.get(entity, self.score_threshold)

    def min_threshold(self) -> float:
        return min([self.score_threshold, *self.entity_thresholds.values()])

    def uses_pseudonyms(self) -> bool:
        return any(self.operator_for(e) == "pseudonym" for e in self.entities)

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def ref(self) -> str:
        """`name@version#hash`: what is recorded beside every redacted artifact."""
        return f"{self.name}@{self.version}#{self.content_hash()}"

    @classmethod
    def load(cls, path: str | Path) -> "RedactionPolicy":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"redaction policy {path} not found (set PiiRedactor.policy_path)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ValueError(f"redaction policy {path} is not valid YAML: {err}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ValueError(f"redaction policy {path} is invalid:\n{err}") from None
