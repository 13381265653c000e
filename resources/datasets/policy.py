"""`DatasetPolicy`: how one model's redacted documents become its training examples and golden hold-out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from resources.datasets.builder import SplitRules, TextStrategy


class DatasetPolicy(BaseModel):
    """Split fractions, the plain-text strategy and the training-size warning (a model's `dataset:` block)."""

    model_config = ConfigDict(extra="forbid")

    validation_fraction: float = Field(default=0.1, description="Share of examples hashed into validation.")
    golden_holdout_fraction: float = Field(
        default=0.0,
        description="Share of corpus examples hashed out of training into the golden set (besides the curated "
        "golden files). 0 keeps the golden set to the curated files.",
    )
    unanswerable_holdout_fraction: float = Field(
        default=0.0, description="Share of documents hashed out of training and out of the knowledge index; the golden "
        "set asks about their values (cloze questions) as unanswerable: the served model, which cannot see them, must "
        "decline. Unanswerable questions a golden file does not have to write by hand.")
    text_strategy: TextStrategy = Field(
        default="sections",
        description="What plain-text documents become: 'sections' (each section an example of the knowledge "
        "block's strategies, see knowledge_examples), 'title_to_instruction' (the whole document one example: "
        "the title, through title_template, is the user turn, the body the answer) or 'exclude' (only in the "
        "knowledge index).",
    )
    title_template: str = Field(
        default="What does our documentation say about {title}?",
        description="User turn for title_to_instruction, and for a section without a heading of its own; must "
        "contain {title}.",
    )
    hold_out_golden_sources: bool = Field(
        default=True, description="A document a curated golden question names as its source_doc_id (a record id or a "
        "file's path or name) never trains: the golden set holds out whole documents. They stay in the knowledge index, "
        "so the served model can answer from them.")
    golden_dev_fraction: float = Field(
        default=0.25, description="Share of the golden questions (hashed by source document, so one document's questions "
        "stay together) in the dev split, which only calibrates settings such as the retrieval threshold; the rest is "
        "the sealed test split the evaluation reports and the gate decides on. A golden record's own `split` field "
        "(dev or test) overrides the hash.")
    golden_requires_facts: bool = Field(
        default=True, description="Every answerable question of a curated golden file must list must_include facts (what "
        "a right answer states); a record without them is quarantined with its file and line. Tag a question the "
        "documents cannot answer `unanswerable`.")
    min_train_examples: int = Field(
        default=200, description="The dataset card warns (asset check) below this many training examples."
    )

    @model_validator(mode="after")
    def _validate(self) -> "DatasetPolicy":
        if not 0 <= self.validation_fraction < 1 or not 0 <= self.golden_holdout_fraction < 1:
            raise ValueError("DatasetPolicy: fractions must lie within [0, 1)")
        if not 0 <= self.unanswerable_holdout_fraction < 1:
            raise ValueError("DatasetPolicy: unanswerable_holdout_fraction must lie within [0, 1)")
        if self.validation_fraction + self.golden_holdout_fraction + self.unanswerable_holdout_fraction >= 1:
            raise ValueError("DatasetPolicy: validation_fraction + golden_holdout_fraction + unanswerable_holdout_fraction "
                             "must leave room for train")
        if not 0 <= self.golden_dev_fraction < 1:
            raise ValueError("DatasetPolicy.golden_dev_fraction must lie within [0, 1)")
        if "{title}" not in self.title_template:
            raise ValueError("DatasetPolicy.title_template must contain {title}")
        return self

    def split_rules(self) -> SplitRules:
        return SplitRules(self.validation_fraction, self.golden_holdout_fraction, self.unanswerable_holdout_fraction)
