"""The curation engine: clean every document, drop low-quality ones and duplicates, with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from dagster import ConfigurableResource
from pydantic import Field, model_validator

from resources.curation.cleaning import DEFAULT_BOILERPLATE, QualityRules, clean_text, quality_issue
from resources.dedup import DedupRules, Deduplicator, normalised_key
from resources.records import Ledger, segments, with_segments

CURATED_EXTRA_COLUMNS = ["dedup_key", "minhash"]


@dataclass
class CurationResult:
    kept: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    ledger: Ledger = field(default_factory=lambda: Ledger(stage="cleaned_documents"))
    superseded: list[dict[str, Any]] = field(default_factory=list)  # {doc_id (an earlier version), by, identity}


class TextCurator(ConfigurableResource):
    """Normalisation, Gopher/C4-style quality filters, language filter and MinHash de-duplication."""

    min_words: int = Field(default=3, description="Documents with fewer words are dropped (too_short).")
    max_words: int | None = Field(
        default=None, description="Documents with more words are dropped (too_long). None (the default): no upper "
        "bound — a long document is cut into passages like any other, never dropped for its length.")
    min_mean_word_length: float = Field(default=2.5, description="Lower bound on mean word length (Gopher: 3).")
    max_mean_word_length: float = Field(default=12.0, description="Upper bound on mean word length (Gopher: 10).")
    max_symbol_ratio: float = Field(
        default=0.2, description="Max share of non-whitespace characters that are symbols rather than letters, "
        "digits or prose punctuation."
    )
    max_duplicate_line_fraction: float = Field(default=0.3, description="Max share of lines that repeat another line.")
    min_alpha_word_fraction: float = Field(default=0.7, description="Min share of words containing a letter.")
    languages: list[str] = Field(
        default=["en"], description="ISO 639-1 codes to keep (py3langid, offline). Empty list: no language filter."
    )
    min_language_confidence: float = Field(
        default=0.9, description="A document is dropped for language only when the detector is at least this sure."
    )
    boilerplate_patterns: list[str] = Field(
        default=list(DEFAULT_BOILERPLATE), description="Regexes; matching lines are removed (footers, disclaimers)."
    )
    near_duplicate_threshold: float = Field(
        default=0.7, description="Estimated Jaccard similarity of word shingles at which a document is a near-duplicate."
    )
    dedup_index_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the persistent cross-batch de-duplication index (one more batch "
        "costs the same with 10 or 1,000 before it). Unset: a SQLite file in the artifact store's local root "
        "(`.index/dedup.sqlite`); Postgres (e.g. EnvVar('TUNEFORGE_DEDUP_URL')) where several workers build corpora.")
    minhash_permutations: int = Field(default=128, description="MinHash permutations (accuracy vs. speed).")
    shingle_chars: int = Field(default=5, description="Characters per shingle for MinHash (of the normalised text).")

    @model_validator(mode="after")
    def _validate(self) -> "TextCurator":
        if self.min_words < 1 or (self.max_words is not None and self.max_words <= self.min_words):
            raise ValueError(f"TextCurator: need 1 <= min_words < max_words, got {self.min_words}, {self.max_words}")
        if not 0 < self.min_mean_word_length < self.max_mean_word_length:
            raise ValueError("TextCurator: need 0 < min_mean_word_length < max_mean_word_length")
        for name in ("max_symbol_ratio", "max_duplicate_line_fraction", "min_alpha_word_fraction",
                     "min_language_confidence", "near_duplicate_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"TextCurator.{name} must be within [0, 1], got {getattr(self, name)}")
        return self

    def quality_rules(self) -> QualityRules:
        return QualityRules(
            min_words=self.min_words,
            max_words=self.max_words,
            min_mean_word_length=self.min_mean_word_length,
            max_mean_word_length=self.max_mean_word_length,
            max_symbol_ratio=self.max_symbol_ratio,
            max_duplicate_line_fraction=self.max_duplicate_line_fraction,
            min_alpha_word_fraction=self.min_alpha_word_fraction,
            languages=tuple(self.languages),
            min_language_confidence=self.min_language_confidence,
            boilerplate_patterns=tuple(self.boilerplate_patterns),
        )

    def dedup_rules(self) -> DedupRules:
        return DedupRules(
            num_perm=self.minhash_permutations, threshold=self.near_duplicate_threshold, shingle_chars=self.shingle_chars
        )

    def dedup_index(self, store_root: str, namespace: str):
        """The persistent cross-batch index (`resources.dedup.DedupIndex`) of one model (`namespace`)."""
        from pathlib import Path

        from resources.dedup import DedupIndex

        url = self.dedup_index_url
        if not url:
            folder = Path(store_root) / ".index"
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            url = f"sqlite:///{folder / 'dedup.sqlite'}"
        return DedupIndex(url, self.dedup_rules(), namespace)

    def signatures(self, texts: Iterable[str]) -> list[tuple[str, list[int]]]:
        """(exact-duplicate key, MinHash values) per text, as `deduplicate` expects them."""
        dedup = Deduplicator(self.dedup_rules())
        return [(normalised_key(t), dedup.signature(t).hashvalues.tolist()) for t in texts]

    def deduplicate(self, batches: Iterable[tuple[str, list[dict[str, Any]]]]) -> CurationResult:
        """Across batches, in the order given: a document whose text (exactly, or as a near-duplicate) was kept
        in an earlier batch is dropped naming the kept one — unless it is a new version of it (the same record id,
        or the same file in a later batch: `resources.dedup.identity_of`), which is kept and supersedes the earlier
        one. Each document carries `dedup_key` and `minhash` (from `signatures`); the result depends only on the
        batches and their order."""
        from resources.dedup import Versions, identity_of

        result = CurationResult(ledger=Ledger(stage="corpus"))
        dedup, versions = Deduplicator(self.dedup_rules()), Versions()
        for batch, documents in batches:
            result.ledger.records_in += len(documents)
            for doc in documents:
                signature = dedup.stored(doc["minhash"])
                earlier = versions.earlier(doc, batch)
                duplicate = dedup.check(doc["dedup_key"], signature, frozenset({earlier}) if earlier else frozenset())
                if duplicate:
                    result.dropped.append({"doc_id": doc["doc_id"], "reason": duplicate[0], "detail": duplicate[1]})
                    result.ledger.dropped[duplicate[0]] += 1
                    continue
                dedup.add(doc["doc_id"], doc["dedup_key"], signature)
                versions.keep(doc, batch)
                if earlier:
                    result.superseded.append({"doc_id": earlier, "by": doc["doc_id"], "identity": identity_of(doc)})
                result.kept.append(doc)
        result.ledger.kept = len(result.kept)
        return result

    def curate(self, documents: Iterable[dict[str, Any]], kept_elsewhere: Iterable[dict[str, Any]] = ()) -> CurationResult:
        """Clean and filter `documents`; de-duplicate them against `kept_elsewhere` (rows with
        doc_id, dedup_key, minhash from other batches) and against each other."""
        return curate(list(documents), list(kept_elsewhere), self.quality_rules(), self.dedup_rules())


def curate(
    documents: list[dict[str, Any]],
    kept_elsewhere: list[dict[str, Any]],
    rules: QualityRules,
    dedup_rules: DedupRules,
) -> CurationResult:
    result = CurationResult()
    result.ledger.records_in = len(documents)
    dedup = Deduplicator(dedup_rules)
    for row in kept_elsewhere:
        dedup.add_stored(row["doc_id"], row["dedup_key"], row["minhash"])

    def drop(doc_id: str, reason: str, detail: str) -> None:
        result.dropped.append({"doc_id": doc_id, "reason": reason, "detail": detail})
        result.ledger.dropped[reason] += 1

    for doc in documents:
        cleaned = [clean_text(s, rules.boilerplate_patterns) for s in segments(doc)]
        if not all(cleaned):
            drop(doc["doc_id"], "empty_after_cleaning", "a text segment is empty once boilerplate is removed")
            continue
        doc = with_segments(doc, cleaned)
        issue = quality_issue(doc["text"], rules)
        if issue:
            drop(doc["doc_id"], *issue)
            continue
        key, signature = normalised_key(doc["text"]), dedup.signature(doc["text"])
        duplicate = dedup.check(key, signature)
        if duplicate:
            drop(doc["doc_id"], *duplicate)
            continue
        dedup.add(doc["doc_id"], key, signature)
        result.kept.append({**doc, "dedup_key": key, "minhash": signature.hashvalues.tolist()})
    result.ledger.kept = len(result.kept)
    return result
