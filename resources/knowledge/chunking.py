"""Section-bounded, token-bounded chunks of redacted documents, each traceable to its file.

A chunk never crosses a section boundary (the section tree is read from the redacted canonical text, see
`parsing.outline`). A section within `max_tokens` of the base model's tokenizer is one chunk. A longer one
is cut by semantic-text-splitter's MarkdownSplitter at the largest Markdown unit (paragraph, list, code
block, sentence, word) that keeps the chunk within a character budget: `max_tokens` (and `overlap_tokens`)
times the section's own measured characters per token, less a margin. Every piece is then counted with the
tokenizer, and the rare one still over `max_tokens` is cut again by the same splitter counting tokens
exactly, so the bound always holds while the splitter counts characters (two orders of magnitude faster
than counting tokens for every candidate cut). `text[start:end]` of the redacted document is exactly the
chunk's text.
"""

from __future__ import annotations

import re

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

    # Characters a token assumed for a section's first cut, and the margin under max_tokens its pieces aim at.
    FIRST_CHARS_PER_TOKEN = 3.5
    CHAR_BUDGET_MARGIN = 0.9
    # A section whose pieces average under this share of max_tokens is cut again at its measured density.
    UNDERFILLED = 0.4

    def __init__(self, tokenizer, rules: ChunkRules = ChunkRules()):
        from semantic_text_splitter import MarkdownSplitter

        self.rules = rules
        self.tokenizer = tokenizer
        self._by_tokens = MarkdownSplitter.from_huggingface_tokenizer(tokenizer, rules.max_tokens,
                                                                      overlap=rules.overlap_tokens)
        self._by_chars = {}  # (capacity, overlap) in characters -> MarkdownSplitter
        fast = getattr(tokenizer, "encode_batch_fast", None)  # tokenizers >= 0.21: no offsets, ~15% faster
        self._encode_batch = fast or tokenizer.encode_batch

    def _count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._encode_batch(texts, add_special_tokens=False)] if texts else []

    def _cut(self, body: str, chars_per_token: float) -> list[tuple[int, str]]:
        from semantic_text_splitter import MarkdownSplitter

        capacity = max(16, int(self.rules.max_tokens * chars_per_token * self.CHAR_BUDGET_MARGIN))
        overlap = min(int(self.rules.overlap_tokens * chars_per_token), capacity // 2 - 1)
        if (capacity, overlap) not in self._by_chars:
            self._by_chars[(capacity, overlap)] = MarkdownSplitter(capacity, overlap=overlap)
        return [(o, p) for o, p in self._by_chars[(capacity, overlap)].chunk_indices(body) if p.strip()]

    def _pieces(self, text: str, sections: list[Section]) -> list[tuple[Section, int, str, int]]:
        """(section, start, text, tokens) of every chunk of the text, in order.

        Every character is counted about once: each section is cut by characters at an assumed density and
        its pieces counted; a section whose pieces all fit is kept (or, when their total fits too, counted
        whole and kept as one chunk); one with a piece over the limit, or with pieces well under it, is cut
        again at its own measured density; a piece still over the limit after that is cut counting tokens."""
        limit = self.rules.max_tokens
        bodies = []  # (section, start of the trimmed body, trimmed body)
        for section in sections:
            body = text[section.start:section.end]
            if body.strip():
                bodies.append((section, section.start + len(body) - len(body.lstrip()), body.strip()))
        cuts = [self._cut(b, self.FIRST_CHARS_PER_TOKEN) for _, _, b in bodies]
        counts = self._count_cuts(cuts)
        whole = [i for i, (cut, tokens) in enumerate(zip(cuts, counts)) if len(cut) > 1 and sum(tokens) <= limit]
        for i, n in zip(whole, self._count([bodies[i][2] for i in whole])):
            if n <= limit:
                cuts[i], counts[i] = [(0, bodies[i][2])], [n]
        # a section much denser or sparser than assumed is cut again at its own density
        recut = [i for i, (cut, tokens) in enumerate(zip(cuts, counts))
                 if len(cut) > 1 and not limit * self.UNDERFILLED <= sum(tokens) / len(cut) <= limit]
        for i in recut:
            cuts[i] = self._cut(bodies[i][2], sum(len(p) for _, p in cuts[i]) / sum(counts[i]))
        for i, tokens in zip(recut, self._count_cuts([cuts[i] for i in recut])):
            counts[i] = tokens
        out = [(section, start + o, p, n) for (section, start, _), cut, tokens in zip(bodies, cuts, counts)
               for (o, p), n in zip(cut, tokens)]
        # a piece over the limit (denser than its section) is cut at its own density, and as a last resort by
        # the splitter counting tokens
        for last in (False, False, True):
            over = [i for i, piece in enumerate(out) if piece[3] > limit]
            if not over:
                break
            parts = {}
            for i in over:
                section, start, piece, n = out[i]
                cut = ([(o, p) for o, p in self._by_tokens.chunk_indices(piece) if p.strip()] if last
                       else self._cut(piece, len(piece) / n))
                parts[i] = [(section, start + o, p) for o, p in cut]
            counted = iter(self._count([p for i in over for _, _, p in parts[i]]))
            out = [piece for i, old in enumerate(out)
                   for piece in ([p + (next(counted),) for p in parts[i]] if i in parts else [old])]
        return out

    def _count_cuts(self, cuts: list[list[tuple[int, str]]]) -> list[list[int]]:
        flat = iter(self._count([p for cut in cuts for _, p in cut]))
        return [[next(flat) for _ in cut] for cut in cuts]

    def chunk(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        text = doc["text"]
        sections = outline(text) if doc.get("kind") == "text" else [_whole(text)]
        pieces = self._pieces(text, sections)
        # a piece that is only headings (its section's text did not fit beside them) says nothing a passage's
        # section path does not: retrieved, it would crowd out the passage that answers; the next piece keeps it
        pieces = [p for i, p in enumerate(pieces) if i + 1 == len(pieces) or not _HEADINGS_ONLY.fullmatch(p[2])]
        chunks = []
        for section, start, piece, tokens in pieces:
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


_HEADINGS_ONLY = re.compile(r"(?:[ \t]*#{1,6}[ \t][^\n]*(?:\n+|$))+")


def _whole(text: str):
    return Section((), 0, 0, len(text))
