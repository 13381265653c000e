"""`KnowledgePolicy`: how a model's documents become chunks, an index and training examples (its `knowledge:`
block)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from resources.knowledge.chunking import ChunkRules
from resources.knowledge.prompt import ABSTAIN
from resources.redaction.engine import DEFAULT_SPACY_MODEL

Strategy = Literal["headings", "raft", "cloze", "raft_pairs", "continued_pretraining", "qa"]


class KnowledgePolicy(BaseModel):
    """Chunking and the offline strategies that turn sections of documents into examples."""

    model_config = ConfigDict(extra="forbid")

    chunk_tokens: int = Field(default=256, description="Most tokens (base model's tokenizer) in one chunk.")
    chunk_overlap_tokens: int = Field(default=32, description="Tokens shared by consecutive chunks of one section.")
    strategies: list[Strategy] = Field(
        default_factory=lambda: ["cloze", "raft", "raft_pairs"],
        description="Views made from the documents (dataset.text_strategy 'sections'), each in the grounded prompt the "
        "gateway serves unless said otherwise: 'cloze' (a question for each value a sentence states — a number of "
        "days, a percentage, a price — answered by the sentence citing its passage; spaCy, no LLM), 'raft' (a "
        "question from the title and heading, answered by the section's opening sentences citing its passage among "
        "retrieved distractors, or an abstention when it is left out), 'raft_pairs' (the company's own question/answer "
        "records and chats: the question with the passages retrieved for it, the answer citing the passage that "
        "states it — or, when none does, the abstention), 'headings' (bare: the headings question answered by the "
        "section's first chunk), 'continued_pretraining' (bare: the passages' own text, every token trained on, mixed "
        "in at continued_pretraining_ratio), and 'qa' (a teacher model writes "
        "qa_pairs_per_chunk question/answer pairs from each passage and, as judge, drops the unsupported and the "
        "not standalone; needs TeacherModel).")
    continued_pretraining_ratio: float = Field(
        default=0.5, description="continued_pretraining passages per example of the other strategies (the mix); with "
        "no other strategy, every passage.")
    grounded_variants: int = Field(default=1, description="Grounded prompts each raft and cloze question is asked in "
                                   "with its passage: other distractors, the passage at another position (more "
                                   "examples of reading, from the same documents).")
    cloze_per_chunk: int = Field(default=4, description="Most cloze questions made from one passage.")
    cloze_spacy_model: str = Field(default=DEFAULT_SPACY_MODEL, description="The spaCy pipeline (an installed package "
                                   "or a folder) whose sentences and value entities the cloze strategy reads.")
    golden_from: Literal["cloze", "headings", "teacher"] = Field(
        default="cloze", description="How the golden questions of documents hashed into the hold-out "
        "(dataset.golden_holdout_fraction) are made: 'cloze' (a question per value a sentence states, the value the "
        "fact a right answer must include; a document without values asked by its headings), 'headings' (a question "
        "per section, answered by its text, no facts) or "
        "'teacher' (the qa strategy's pairs and judge over their passages; falls back to headings, with a warning, "
        "when no teacher is configured).")
    qa_pairs_per_chunk: int = Field(default=3, description="Question/answer pairs the teacher writes per passage.")
    qa_judge: bool = Field(default=True, description="Ask the teacher, as judge, whether each pair is supported by its "
                           "passage and its question standalone; drop those that are not.")
    qa_near_duplicate_threshold: float = Field(
        default=0.6, description="Estimated Jaccard similarity (MinHash over 5-character shingles of the "
        "normalised question) at or above which a generated question repeats an earlier one and is dropped "
        "(duplicate_question).")
    question_template: str = Field(
        default="What does {title} say about {heading}?",
        description="The headings strategy's question for a section; {title} and {heading} are filled in. A section "
        "before the first heading, or the title's own section, is asked with dataset.title_template; raft asks the "
        "further passages of text before any heading (all of a document without headings) with {heading} the "
        "passage's topic, its most salient noun phrase.")
    min_answer_chars: int = Field(default=40, description="A section whose text is shorter gives no example.")
    raft_distractors: int = Field(default=2, description="Retrieved passages of other documents beside the oracle.")
    abstention: str = Field(
        default=ABSTAIN, description="What the model says when the passages do not answer: the target of the raft and "
        "cloze abstention examples, what the gateway answers below the retrieval threshold or when the grounding check "
        "abstains, and what the evaluation counts as declining.")
    multi_passage_fraction: float = Field(
        default=0.15, description="Share of the raft and cloze questions also asked together with another question "
        "about another passage, both passages in the prompt: the answer states both and cites each.")
    raft_oracle_fraction: float = Field(default=0.9, description="Share of raft, cloze and raft_pairs examples whose "
                                        "passages hold the answer; every question is seen with its passage, and some "
                                        "also without it (among as many other passages), answered by the abstention. "
                                        "0.9: at 0.8 the sample models, with the abstention named in the prompt, "
                                        "declined a third of the answerable dev questions whose passage they had.")

    @model_validator(mode="after")
    def _validate(self) -> "KnowledgePolicy":
        self.chunk_rules()  # raises on bad sizes
        if not 0 <= self.raft_oracle_fraction <= 1:
            raise ValueError("KnowledgePolicy.raft_oracle_fraction must lie within [0, 1]")
        if not 0 < self.qa_near_duplicate_threshold <= 1:
            raise ValueError("KnowledgePolicy.qa_near_duplicate_threshold must lie within (0, 1]")
        if not 0 < self.continued_pretraining_ratio <= 10:
            raise ValueError("KnowledgePolicy.continued_pretraining_ratio must lie within (0, 10]")
        if not 1 <= self.grounded_variants <= 8:
            raise ValueError("KnowledgePolicy.grounded_variants must lie within [1, 8]")
        if not 1 <= self.cloze_per_chunk <= 20:
            raise ValueError("KnowledgePolicy.cloze_per_chunk must lie within [1, 20]")
        if not 1 <= self.qa_pairs_per_chunk <= 20:
            raise ValueError("KnowledgePolicy.qa_pairs_per_chunk must lie within [1, 20]")
        if not 0 <= self.multi_passage_fraction <= 1:
            raise ValueError("KnowledgePolicy.multi_passage_fraction must lie within [0, 1]")
        if not self.abstention.strip():
            raise ValueError("KnowledgePolicy.abstention must not be empty")
        if "{heading}" not in self.question_template:
            raise ValueError("KnowledgePolicy.question_template must contain {heading}")
        return self

    def chunk_rules(self) -> ChunkRules:
        return ChunkRules(self.chunk_tokens, self.chunk_overlap_tokens)
