"""`DatasetPolicy`: how redacted documents become training examples and the golden set."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from resources.datasets.builder import SplitRules, TextStrategy
from resources.preflight import CheckedResource, problem


class DatasetPolicy(CheckedResource):
    """Split fractions, the plain-text strategy, golden sources and the training-size warning."""

    validation_fraction: float = Field(default=0.1, description="Share of examples hashed into validation.")
    golden_holdout_fraction: float = Field(
        default=0.0,
        description="Share of corpus examples hashed out of training into the golden set (besides the curated "
        "golden files). 0 keeps the golden set to the curated files.",
    )
    text_strategy: TextStrategy = Field(
        default="title_to_instruction",
        description="What plain-text documents become: 'title_to_instruction' (the title, through "
        "title_template, is the user turn; the body is the answer; untitled texts are dropped) or 'exclude'.",
    )
    title_template: str = Field(
        default="What does our documentation say about {title}?",
        description="User turn for title_to_instruction; must contain {title}.",
    )
    golden_paths: list[str] = Field(
        default=["data/sample/golden.jsonl"], description="Curated golden JSONL files (id, question, reference_answer)."
    )
    min_train_examples: int = Field(
        default=200, description="The dataset card warns (asset check) below this many training examples."
    )

    @model_validator(mode="after")
    def _validate(self) -> "DatasetPolicy":
        if not 0 <= self.validation_fraction < 1 or not 0 <= self.golden_holdout_fraction < 1:
            raise ValueError("DatasetPolicy: fractions must lie within [0, 1)")
        if self.validation_fraction + self.golden_holdout_fraction >= 1:
            raise ValueError("DatasetPolicy: validation_fraction + golden_holdout_fraction must leave room for train")
        if "{title}" not in self.title_template:
            raise ValueError("DatasetPolicy.title_template must contain {title}")
        return self

    def problems(self) -> list[str]:
        return [problem(self, "golden_paths", path, "no such file") for path in self.golden_paths if not Path(path).is_file()]

    def split_rules(self) -> SplitRules:
        return SplitRules(self.validation_fraction, self.golden_holdout_fraction)

    def golden_files(self) -> list[Path]:
        files = [Path(p) for p in self.golden_paths]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"golden files not found: {missing} (DatasetPolicy.golden_paths)")
        return files
