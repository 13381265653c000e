"""Section-bounded, token-bounded chunks of redacted documents, each traceable to its file.

A chunk never crosses a section boundary (the section tree is read from the redacted canonical text, see
`parsing.outline`); inside a section, semantic-text-splitter's MarkdownSplitter cuts at the largest
Markdown unit (paragraph, list, code block, sentence, word) that keeps the chunk within `max_tokens` of
the base model's tokenizer, with `overlap_tokens` of overlap. `text[start:end]` of the redacted document
is exactly the chunk's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from resources.knowledge.parsing import Section, outline
from resources.records import sha256_hex

CHUNK_COLUMNS = [
    "chunk_id",  # sha256(doc_id:start:end)[:20]
    "doc_id",  # the redacted document it was cut from
    "external_id",  # the document's own id, if it had one
    "title",  # the document's title (its first heading, else its file name)
    "section",  # the heading path, outermost first, joined by " > " ("" before the first heading)
    "level",  # the section's heading level (0: before the first heading)
    "start",  # character span in the redacted document's text
    "end",
    "tokens",  # in the base model's tokenizer
    "text",
    "kind",  # the document's kind (text, chat, instruction)
    "batch",
    "source_path",  # the raw file, relative to the inbox, and its sha256
    "source_sha256",
]


@dataclass(frozen=True)
class ChunkRules:
    max_tokens: int = 256
    overlap_tokens: int = 32

    def __post_init__(self):
        if self.max_tokens < 16:
            raise ValueError(f"chunk max_tokens must be at least 16, got {self.max_tokens}")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError(f"chunk overlap_tokens must lie in [0, max_tokens/2), got {self.overlap_tokens}")


class Chunker:
    """Chunks documents with one tokenizer (a `tokenizers.Tokenizer`, e.g. a transformers fast tokenizer's
    `backend_tokenizer`)."""

    def __init__(self, tokenizer, rules: ChunkRules = ChunkRules()):
        from semantic_text_splitter import MarkdownSplitter

        self.rules = rules
        self.tokenizer = tokenizer
        self.splitter = MarkdownSplitter.from_huggingface_tokenizer(tokenizer, rules.max_tokens,
                                                                    overlap=rules.overlap_tokens)

    def chunk(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        text = doc["text"]
        sections = outline(text) if doc.get("kind") == "text" else [_whole(text)]
        chunks, pieces = [], []
        for section in sections:
            body = text[section.start:section.end]
            for offset, piece in self.splitter.chunk_indices(body):
                if piece.strip():
                    pieces.append((section, section.start + offset, piece))
        counts = [len(e.ids) for e in self.tokenizer.encode_batch([p for _, _, p in pieces], add_special_tokens=False)]
        for (section, start, piece), tokens in zip(pieces, counts):
            end = start + len(piece)
            chunks.append({
                "chunk_id": sha256_hex(f"{doc['doc_id']}:{start}:{end}")[:20],
                "doc_id": doc["doc_id"],
                "external_id": doc.get("external_id"),
                "title": doc.get("title") or "",
                "section": " > ".join(section.path),
                "level": section.level,
                "start": start,
                "end": end,
                "tokens": tokens,
                "text": piece,
                "kind": doc.get("kind"),
                "batch": doc.get("batch"),
                "source_path": doc.get("source_path"),
                "source_sha256": doc.get("source_sha256"),
            })
        return chunks

    def chunk_all(self, documents: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(chunks, documents that gave none: {doc_id, reason, detail})."""
        chunks, empty = [], []
        for doc in documents:
            got = self.chunk(doc)
            if not got:
                empty.append({"doc_id": doc["doc_id"], "reason": "no_chunks", "detail": "the text is only whitespace"})
            chunks.extend(got)
        return chunks, empty


def _whole(text: str):
    return Section((), 0, 0, len(text))
