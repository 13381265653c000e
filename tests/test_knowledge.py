"""Documents in: parsing with structure (files written by real libraries), byte-identical files, documents of any
length, section- and token-bounded chunks with exact spans, and the offline examples made from sections."""

import io
import json
import re
from collections import Counter

import pytest

from resources.ingestion.readers import ReaderLimits, read_batch
from resources.knowledge.chunking import ChunkRules, Chunker
from resources.knowledge.examples import build_knowledge_examples
from resources.knowledge.parsing import ParseError, outline, parse_document
from resources.knowledge.policy import KnowledgePolicy
from resources.knowledge.prompt import ABSTAIN, INSTRUCTION
from helpers import HEADINGS, ROOT


# -- parsing ------------------------------------------------------------------------------------------------
def headings(text: str) -> list[tuple[str, ...]]:
    return [s.path for s in outline(text) if s.level]


def test_markdown_keeps_its_text_and_setext_headings_become_atx():
    md = "Guide\n=====\n\nIntro.\n\nInstall\n-------\n\n```sh\n# not a heading\npip install x\n```\n\n### Extras\n\nMore.\n"
    doc = parse_document(md.encode(), "md", "docs/guide.md")
    assert doc.title == "Guide"
    assert headings(doc.text) == [("Guide",), ("Guide", "Install"), ("Guide", "Install", "Extras")]
    assert "# not a heading" in doc.text and "pip install x" in doc.text  # code blocks are not headings


def test_restructuredtext_underlines_set_levels_in_the_order_styles_appear():
    rst = "=========\nThe Tool\n=========\n\nIntro text.\n\nUsage\n=====\n\nRun it.\n\nOptions\n-------\n\nFlags.\n\nLicense\n=====\n\nMIT.\n"
    doc = parse_document(rst.encode(), "rst", "README.rst")
    assert doc.title == "The Tool"
    assert headings(doc.text) == [("The Tool",), ("The Tool", "Usage"), ("The Tool", "Usage", "Options"),
                                  ("The Tool", "License")]


def test_plain_text_numbered_headings_and_a_file_name_title_when_there_is_none():
    txt = "Services agreement between the parties.\n\n1. Definitions\n\nTerms used here.\n\n1.1 Service\n\nThe hosted product.\n\n2. Fees\n\nEight dollars.\n"
    doc = parse_document(txt.encode(), "txt", "contracts/msa_2026.txt")
    assert headings(doc.text) == [("1. Definitions",), ("1. Definitions", "1.1 Service"), ("2. Fees",)]
    flat = parse_document(b"Just a paragraph of text with no heading at all.\n", "txt", "notes/meeting_notes.txt")
    assert flat.title == "meeting notes" and flat.headings == 0


def test_front_matter_gives_the_title_and_no_passage_and_anchor_marks_leave_headings():
    """A Markdown page with YAML front matter (Jekyll, Hugo, MkDocs) is titled by its `title:`, the keys are no
    text of it (left in, `title: …` over `---` read as a heading); Sphinx's ¶ anchor marks leave headings."""
    md = ("---\ntitle: Webhooks guide\nlayout: docs\nsidebar_position: 3\n---\n\nWebhooks send events to your "
          "endpoint.\n\n## Retries ¶\n\nFailed deliveries are retried 5 times.\n")
    doc = parse_document(md.encode(), "md", "docs/webhooks.md")
    assert doc.title == "Webhooks guide" and "layout" not in doc.text and "sidebar_position" not in doc.text
    assert headings(doc.text) == [("Webhooks guide",), ("Webhooks guide", "Retries")]
    same = parse_document(b"---\ntitle: Guide\n---\n# Guide\n\nText.\n", "md", "guide.md")
    assert same.text.count("# Guide") == 1  # the page's own heading is not repeated
    page = ("<html><head><title>Retries - Acme 1.0 documentation</title></head><body><h1>Retries<a class='headerlink' "
            "href='#retries'>¶</a></h1><p>Five times.</p><h2>Backoff¶</h2><p>Doubles.</p></body></html>")
    doc = parse_document(page.encode(), "html", "retries.html")
    assert doc.title == "Retries" and headings(doc.text) == [("Retries",), ("Retries", "Backoff")] and "¶" not in doc.text


def test_legacy_encodings_are_decoded_and_bytes_that_are_no_text_refused():
    """A Windows-1252 / Latin-1 text file (£ and é), a cp1250 Polish one and a UTF-16 export read as the text they
    hold; bytes that no encoding reads are refused, naming the file and the first byte that is not UTF-8."""
    western = "Refunds\n=======\n\nA refund costs a fee of £5 and takes 14 days; the café voucher is not refunded.\n"
    for encoding in ("latin-1", "cp1252", "utf-16"):
        doc = parse_document(western.encode(encoding), "txt", "policies/refunds.txt")
        assert "a fee of £5" in doc.text and "the café voucher" in doc.text and doc.title == "Refunds", encoding
    polish = "Zażółć gęślą jaźń: termin wypowiedzenia umowy wynosi trzy miesiące.\n"
    assert "Zażółć gęślą jaźń" in parse_document(polish.encode("cp1250"), "md", "umowa.md").text
    with pytest.raises(ParseError, match=r"bin.txt: invalid UTF-8 at byte 128, and no other text encoding reads it"):
        parse_document(bytes(range(256)) * 4, "txt", "bin.txt")


def test_html_headings_and_body_text_without_scripts():
    html = ("<html><head><title>Pricing page</title><style>p{color:red}</style></head><body><nav>Home</nav>"
            "<h1>Pricing</h1><p>The <b>Team</b> plan costs $8 per user.</p><script>alert(1)</script>"
            "<h2>Refunds</h2><ul><li>Within 30 days</li><li>Prorated</li></ul></body></html>")
    doc = parse_document(html.encode(), "html", "site/pricing.html")
    assert doc.title == "Pricing"
    assert headings(doc.text) == [("Pricing",), ("Pricing", "Refunds")]
    assert "The Team plan costs $8 per user." in doc.text and "Within 30 days" in doc.text
    assert "alert" not in doc.text and "color" not in doc.text


def docx_bytes() -> bytes:
    from docx import Document

    document = Document()
    document.add_heading("Employee handbook", level=0)  # the Title style
    document.add_paragraph("Welcome to Quillstack.")
    document.add_heading("Leave", level=1)
    document.add_paragraph("Staff get 25 days of paid leave a year.")
    document.add_heading("Carry-over", level=2)
    document.add_paragraph("Up to 5 days carry over into the next year.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Notice", "2 weeks"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_docx_written_by_python_docx():
    doc = parse_document(docx_bytes(), "docx", "hr/handbook.docx")
    assert doc.title == "Employee handbook"
    assert headings(doc.text) == [("Employee handbook",), ("Employee handbook", "Leave"),
                                  ("Employee handbook", "Leave", "Carry-over")]
    assert "25 days of paid leave" in doc.text and "Notice | 2 weeks" in doc.text


def pdf_bytes(outline_entries: bool = True, password: str | None = None, blank: bool = False) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for title, body in (("Service levels", "Uptime is 99.9% per month."), ("Credits", "A missed month earns a 10% credit.")):
        pdf.add_page()
        if blank:
            continue
        if outline_entries:
            pdf.start_section(title)
        pdf.cell(text=title, new_x="LMARGIN", new_y="NEXT")
        pdf.multi_cell(0, 8, body)
    data = bytes(pdf.output())
    if password:
        from pypdf import PdfReader, PdfWriter

        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
        writer.encrypt(password, algorithm="AES-128")
        out = io.BytesIO()
        writer.write(out)
        data = out.getvalue()
    return data


def test_pdf_written_by_fpdf2_takes_its_headings_from_the_outline():
    doc = parse_document(pdf_bytes(), "pdf", "legal/sla.pdf")
    assert headings(doc.text) == [("Service levels",), ("Credits",)]
    assert "Uptime is 99.9% per month." in doc.text and "10% credit" in doc.text
    assert doc.title == "sla"  # two top-level bookmarks are its sections, no metadata title: the file's name
    plain = parse_document(pdf_bytes(outline_entries=False), "pdf", "legal/sla_v1.pdf")
    assert plain.headings == 0 and plain.title == "sla v1" and "Uptime" in plain.text


@pytest.mark.parametrize("data, reason", [
    (pdf_bytes(password="s3cret"), "encrypted_pdf"),
    (b"%PDF-1.7\n1 0 obj <<>> garbage", "malformed_pdf"),
    (pdf_bytes(blank=True), "no_text"),
    (b"PK\x03\x04 not really a zip", "malformed_docx"),
])
def test_unreadable_documents_raise_a_reason(data, reason):
    fmt = "docx" if reason == "malformed_docx" else "pdf"
    with pytest.raises(ParseError) as err:
        parse_document(data, fmt, f"in/bad.{fmt}")
    assert err.value.reason == reason and f"in/bad.{fmt}" in err.value.detail


# -- a folder as an inbox batch ---------------------------------------------------------------------------------
def test_a_folder_of_documents_identical_copies_long_files_and_bad_ones(tmp_path):
    folder = tmp_path / "inbox" / "docs"
    folder.mkdir(parents=True)
    long = "# Manual\n\n" + "".join(f"## Part {i}\n\n" + ("Words of the manual. " * 200) + "\n\n" for i in range(20))
    assert len(long) > 50_000
    (folder / "manual.md").write_text(long)
    (folder / "guide.md").write_text("# Guide\n\nHello.\n")
    (folder / "guide-copy.md").write_text("# Guide\n\nHello.\n")
    (folder / "handbook.docx").write_bytes(docx_bytes())
    (folder / "sla.pdf").write_bytes(pdf_bytes())
    (folder / "locked.pdf").write_bytes(pdf_bytes(password="pw"))
    (folder / "page.html").write_text("<h1>Status</h1><p>All systems go.</p>")
    records = tmp_path / "inbox" / "records.jsonl"
    records.write_text(json.dumps({"text": "x" * 60_000}) + "\n")
    read = read_batch("docs", folder, tmp_path / "inbox", ReaderLimits())
    by_path = {d["source_path"]: d for d in read.documents}
    assert set(by_path) == {"docs/manual.md", "docs/guide-copy.md", "docs/handbook.docx", "docs/sla.pdf", "docs/page.html"}
    assert len(by_path["docs/manual.md"]["text"]) > 50_000  # a document of any length is accepted (and split later)
    assert [(d["source_path"], d["duplicate_of"]) for d in read.duplicates] == [("docs/guide.md", "docs/guide-copy.md")]
    assert [(q["source_path"], q["reason"]) for q in read.quarantine] == [("docs/locked.pdf", "encrypted_pdf")]
    ledger = read.ledger()
    assert ledger.dropped["exact_duplicate"] == 1 and ledger.records_in == ledger.kept + 1 + 1
    assert len({d["doc_id"] for d in read.documents}) == len(read.documents)
    # records inside structured files keep their length limit
    single = read_batch("records.jsonl", records, tmp_path / "inbox", ReaderLimits())
    assert [q["reason"] for q in single.quarantine] == ["oversized_record"]


# -- chunking ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chunker(smol_tokenizer):
    return Chunker(smol_tokenizer.backend_tokenizer, ChunkRules(max_tokens=64, overlap_tokens=8))


def test_chunks_stay_inside_sections_within_the_token_bound_and_index_the_text_exactly(chunker):
    text = parse_document(("# Manual\n\nIntro paragraph.\n\n" + "".join(
        f"## Part {i}\n\n" + " ".join(f"Sentence {j} of part {i} explains a setting." for j in range(30)) + "\n\n"
        for i in range(3))).encode(), "md", "manual.md").text
    doc = {"doc_id": "d1", "title": "Manual", "kind": "text", "text": text, "source_sha256": "f" * 64, "source_path": "manual.md"}
    chunks = chunker.chunk(doc)
    sections = [s for s in outline(text)]
    assert len(chunks) > len(sections)  # long sections were split
    for c in chunks:
        assert text[c["start"]:c["end"]] == c["text"]
        assert c["tokens"] <= 64
        inside = [s for s in sections if s.start <= c["start"] and c["end"] <= s.end]
        assert inside and " > ".join(inside[0].path) == c["section"]
        assert c["source_sha256"] == "f" * 64
    assert {c["section"] for c in chunks} == {"Manual", "Manual > Part 0", "Manual > Part 1", "Manual > Part 2"}
    ids = [c["chunk_id"] for c in chunks]
    assert len(set(ids)) == len(ids) and ids == [c["chunk_id"] for c in chunker.chunk(doc)]  # stable


def test_chunks_of_text_far_denser_or_sparser_than_prose_still_fit_and_count_exactly(chunker, smol_tokenizer):
    """The splitter cuts by characters at an assumed density; hex digests (about 2 characters a token), long
    repeated words (many characters a token) and a one-section wall of prose must still give chunks within the
    bound whose token counts are the tokenizer's own, and a section that fits stays one chunk."""
    import hashlib
    hexes = " ".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(60))
    sparse = " ".join(["documentation"] * 400)
    prose = " ".join(f"Clause {j} says the supplier keeps records for seven years." for j in range(80))
    text = f"# Dense\n\n{hexes}\n\n# Sparse\n\n{sparse}\n\n# Prose\n\n{prose}\n\n# Short\n\nOne line that fits.\n"
    doc = {"doc_id": "d2", "title": "Mixed", "kind": "text", "text": text}
    chunks = chunker.chunk(doc)
    tok = smol_tokenizer.backend_tokenizer
    for c in chunks:
        assert text[c["start"]:c["end"]] == c["text"]
        assert c["tokens"] == len(tok.encode(c["text"], add_special_tokens=False).ids) <= 64
    by_section = {s: [c for c in chunks if c["section"] == s] for s in ("Dense", "Sparse", "Prose", "Short")}
    assert [c["text"] for c in by_section["Short"]] == ["# Short\n\nOne line that fits."]
    for name in ("Dense", "Sparse", "Prose"):
        parts = by_section[name]
        assert len(parts) > 3
        # the section is covered from its first character to its last, and pieces are not tiny
        assert parts[0]["text"].split()[0] == text[parts[0]["start"]:].split()[0]
        assert text[:parts[-1]["end"]].rstrip().endswith(parts[-1]["text"].rstrip()[-10:])
        assert sum(c["tokens"] for c in parts) / len(parts) >= 64 * 0.4


def test_a_passage_of_headings_alone_is_not_a_chunk(chunker):
    """A heading whose paragraph did not fit beside it is not a passage of its own (retrieved, it would crowd out
    the passage that answers); the passage after it carries the section path."""
    long = " ".join(f"Clause {i} of the agreement binds both parties for twelve months." for i in range(20))
    chunks = section_chunks(chunker, [("Agreement", f"# Service Level Agreement\n\n{long}\n\n## Credits\n\n{long}\n")])
    assert chunks and all(c["text"].lstrip("# ").strip() not in ("Service Level Agreement", "Credits") for c in chunks)
    assert all(any(not line.startswith("#") and line.strip() for line in c["text"].splitlines()) for c in chunks)
    assert {c["section"] for c in chunks} >= {"Service Level Agreement", "Service Level Agreement > Credits"}


def test_the_grounded_prompt_shows_a_passage_under_its_heading_path_without_its_heading_lines():
    from resources.knowledge.prompt import system_prompt

    passages = [{"title": "Information Security Policy", "section": "Information Security Policy",
                 "text": "# Information Security Policy\n\nAll customer data is encrypted at rest with AES-256."},
                {"title": "Handbook", "section": "Handbook > Leave", "text": "## Leave\n### Carry-over\nUp to 5 days carry over."},
                {"title": "Notes", "section": "Notes", "text": "# Notes"}]
    prompt = system_prompt(passages)
    assert "[1] Information Security Policy\nAll customer data is encrypted" in prompt
    assert "[2] Handbook > Leave\nUp to 5 days carry over." in prompt and "###" not in prompt
    assert "[3] Notes\n# Notes" in prompt  # a passage of headings alone keeps them (it has nothing else)


def test_records_that_are_not_documents_are_one_section(chunker):
    chat = {"doc_id": "c1", "kind": "chat", "title": None, "text": "# How do I reset?\n\nClick reset."}
    assert [c["section"] for c in chunker.chunk(chat)] == [""]


# -- examples from sections ----------------------------------------------------------------------------------
def section_chunks(chunker, docs):
    out = []
    for i, (title, body) in enumerate(docs):
        text = parse_document(body.encode(), "md", f"{title}.md").text
        out += chunker.chunk({"doc_id": f"doc{i}", "title": title, "kind": "text", "text": text})
    return out


def test_headings_ask_about_each_section_and_answer_with_its_text(chunker):
    chunks = section_chunks(chunker, [("Pricing", "# Pricing\n\nPlans are billed monthly in advance of use.\n\n"
                                       "## Team plan\n\nThe Team plan costs $8 per user per month, billed yearly.\n\n"
                                       "## Tiny\n\nShort.\n")])
    build = build_knowledge_examples(chunks, HEADINGS, "What does our documentation say about {title}?")
    qa = [(m[0]["content"], m[1]["content"]) for m in (json.loads(e["messages"]) for e in build.examples)]
    assert qa == [("What does our documentation say about Pricing?", "Plans are billed monthly in advance of use."),
                  ("What does Pricing say about Team plan?", "The Team plan costs $8 per user per month, billed yearly.")]
    assert build.counts["headings_generated"] == 3 and build.counts["headings_kept"] == 2
    assert [d["reason"] for d in build.dropped] == ["section_too_short"]
    assert {e["split_key"] for e in build.examples} == {"doc0"} and {e["source_doc_id"] for e in build.examples} == {"doc0"}


def test_a_section_whose_first_passage_is_its_heading_alone_is_answered_by_the_next(chunker):
    """filelock's README: its title section was cut into '# filelock' and the text under it; the section still
    gives an example, answered by the first passage that says something."""
    base = {"doc_id": "d", "title": "filelock", "section": "filelock", "level": 1, "kind": "text"}
    chunks = [{**base, "chunk_id": "c1", "start": 0, "end": 10, "text": "# filelock"},
              {**base, "chunk_id": "c2", "start": 11, "end": 90, "text": "A platform-independent file lock for Python, "
               "used to coordinate processes that share a file."}]
    build = build_knowledge_examples(chunks, HEADINGS, "What is {title}?")
    assert [json.loads(e["messages"])[1]["content"] for e in build.examples] == [chunks[1]["text"]]
    assert build.examples[0]["chunk_id"] == "c2" and not build.dropped


def test_questions_that_need_two_passages_cite_each(chunker):
    """multi_passage_fraction: a share of the questions asked together with another about another passage; the
    answer states both, each cited with the number of the passage that holds it."""
    import re

    docs = [(f"Doc {i}", f"# Doc {i}\n\n## Topic {i}\n\nDocument {i} says the answer is number {i} in every case.\n")
            for i in range(30)]
    chunks = section_chunks(chunker, docs)

    def retrieve(questions, k):
        return [[{**p, "score": 0.5} for p in chunks][:k] for _ in questions]

    policy = KnowledgePolicy(strategies=["raft"], raft_distractors=2, multi_passage_fraction=0.2)
    build = build_knowledge_examples(chunks, policy, "About {title}?", retrieve=retrieve)
    two = [json.loads(e["messages"]) for e in build.examples if " Also, " in json.loads(e["messages"])[1]["content"]]
    assert build.counts["raft_two_passages"] == len(two) == 6
    for system, question, answer in ((m[0]["content"], m[1]["content"], m[2]["content"]) for m in two):
        cited = [int(n) for n in re.findall(r"\[(\d)\]", answer)]
        assert len(cited) == 2 and cited[0] != cited[1] and len(system.split("\n\n[")) - 1 == 3
        blocks = system.split("\n\n[")[1:]
        for n, sentence in zip(cited, re.split(r" \[\d\] ?", answer)):
            assert sentence.strip() and sentence.strip() in blocks[n - 1]


def test_raft_puts_the_section_among_distractors_cites_it_or_abstains(chunker):
    docs = [(f"Doc {i}", f"# Doc {i}\n\n## Topic {i}\n\nDocument {i} says the answer is number {i} in every case.\n")
            for i in range(30)]
    chunks = section_chunks(chunker, docs)
    pool = [c for c in chunks]

    def retrieve(questions, k):  # a stand-in for the index: nearest = every other passage, in order
        return [[{**p, "score": 0.5} for p in pool][:k] for _ in questions]

    policy = KnowledgePolicy(strategies=["raft"], raft_distractors=2, raft_oracle_fraction=0.7, multi_passage_fraction=0.0)
    build = build_knowledge_examples(chunks, policy, "About {title}?", retrieve=retrieve, held_out_docs={"doc1"})
    assert build.examples and build.counts["raft_with_oracle"] and build.counts["raft_abstain"]
    # every question is seen with its passage; about 30% of the examples are abstentions, as many passages each
    assert build.counts["raft_with_oracle"] == build.counts["raft_kept"] == 30
    assert 0.2 <= build.counts["raft_abstain"] / len(build.examples) <= 0.4
    questions = Counter(json.loads(e["messages"])[1]["content"] for e in build.examples)
    assert max(questions.values()) == 2 and len(questions) == 30
    # grounded_variants: each question also among other distractors, its passage elsewhere; the share still holds
    three = build_knowledge_examples(chunks, policy.model_copy(update={"grounded_variants": 3}), "About {title}?",
                                     retrieve=retrieve, held_out_docs={"doc1"})
    assert three.counts["raft_with_oracle"] == 3 * 30
    assert 0.2 <= three.counts["raft_abstain"] / len(three.examples) <= 0.4
    contexts = {}
    for e in three.examples:
        m = json.loads(e["messages"])
        if not m[2]["content"].startswith("The passages"):
            contexts.setdefault(m[1]["content"], set()).add(m[0]["content"])
    assert all(len(c) == 3 for c in contexts.values())
    assert len({e["doc_id"] for e in three.examples}) == len(three.examples)
    for example in build.examples:
        messages = json.loads(example["messages"])
        system, question, answer = messages[0]["content"], messages[1]["content"], messages[2]["content"]
        assert system.startswith(INSTRUCTION.format(abstention=ABSTAIN)) and messages[1]["role"] == "user"
        own = next(c for c in chunks if c["chunk_id"] == example["chunk_id"])
        blocks = system.split("\n\n[")[1:]
        assert len(blocks) == 3
        if example["source_doc_id"] != "doc1":
            assert "Doc 1 >" not in system  # a held-out document is never a distractor
        if answer == ABSTAIN:
            assert own["text"].split("\n\n", 1)[1].strip() not in system
        else:
            n = int(answer.rsplit("[", 1)[1].rstrip("]"))
            assert blocks[n - 1].startswith(f"{n}] ") and own["text"].split("\n\n", 1)[1].strip() in blocks[n - 1]
        assert question.endswith("?")


def test_cloze_asks_for_each_stated_value_and_answers_with_the_sentence_citing_its_passage(chunker):
    docs = [("Handbook", "# Handbook\n\n## Leave\n\nFull-time staff get 25 days of paid annual leave each calendar year. "
             "Ask your manager first.\n\n## Travel\n\nStaff book economy class for flights under 6 hours.\n"),
            ("Agreement", "# Agreement\n\n## Credits\n\nThe Customer receives a service credit of 10% of that month's fees.\n"
             "\n## Parties\n\nThe parties are named in the order form.\n")]
    docs += [(f"Other {i}", f"# Other {i}\n\n## Note\n\nThis page is about topic {i} only.\n") for i in range(6)]
    chunks = section_chunks(chunker, docs)

    def retrieve(questions, k):
        return [[{**p, "score": 0.5} for p in chunks][:k] for _ in questions]

    policy = KnowledgePolicy(strategies=["cloze"], raft_distractors=1, raft_oracle_fraction=1.0)
    build = build_knowledge_examples(chunks, policy, "About {title}?", retrieve=retrieve, held_out_docs={"doc1"})
    asked = {json.loads(e["messages"])[1]["content"]: json.loads(e["messages"])[2]["content"] for e in build.examples}
    # the held-out Agreement gives none; a sentence without a value gives none, nor a number that names ("topic 3");
    # "under" stays before the question
    assert set(asked) == {"Full-time staff get how many days of paid annual leave each calendar year?",
                          "Staff book economy class for flights under how many hours?"}, asked
    for example in build.examples:
        system, question, answer = (m["content"] for m in json.loads(example["messages"]))
        n = int(answer.rsplit("[", 1)[1].rstrip("]"))
        sentence = answer.rsplit(" [", 1)[0]
        blocks = system.split("\n\n[")[1:]
        assert sentence in blocks[n - 1].split("\n", 1)[1]  # the cited passage holds the sentence, and no other
        assert sum(sentence in b for b in blocks) == 1
        assert example["kind"] == "knowledge:cloze" and example["source_doc_id"] == "doc0"
    # the nearest passages without the answer are the distractors, another section of the same document among them
    headings = [[b.split("\n", 1)[0] for b in json.loads(e["messages"])[0]["content"].split("\n\n[")[1:]]
                for e in build.examples]
    assert all(len(h) == 2 for h in headings) and any(all(x.split("] ", 1)[1].startswith("Handbook") for x in h) for h in headings), headings
    assert build.counts["cloze_generated"] == build.counts["cloze_kept"] == 2
    assert len({e["doc_id"] for e in build.examples}) == 2


def test_continued_pretraining_trains_on_every_passage_at_its_ratio_never_a_held_out_one(chunker):
    docs = [(f"Doc {i}", f"# Doc {i}\n\n## Part\n\nDocument {i} keeps its records for {i + 2} years in the archive.\n")
            for i in range(8)]
    chunks = section_chunks(chunker, docs)
    alone = build_knowledge_examples(chunks, KnowledgePolicy(strategies=["continued_pretraining"]), "About {title}?",
                                     held_out_docs={"doc3"})
    texts = [json.loads(e["messages"])[-1]["content"] for e in alone.examples]
    # every passage of every document but the held-out one, its text whole, the prompt its heading path
    assert sorted(texts) == sorted(c["text"].strip() for c in chunks if c["doc_id"] != "doc3")
    assert {json.loads(e["messages"])[0]["content"] for e in alone.examples} >= {"Doc 0 > Part", "Doc 7 > Part"}
    assert {e["kind"] for e in alone.examples} == {"knowledge:continued_pretraining"}
    mixed = build_knowledge_examples(chunks, KnowledgePolicy(strategies=["headings", "continued_pretraining"],
                                                             continued_pretraining_ratio=0.5), "About {title}?")
    kinds = Counter(e["kind"] for e in mixed.examples)
    assert kinds["knowledge:continued_pretraining"] == round(kinds["knowledge:headings"] * 0.5) > 0
    assert mixed.counts["continued_pretraining_dropped_over_ratio"] == len(chunks) - kinds["knowledge:continued_pretraining"]
    again = build_knowledge_examples(chunks, KnowledgePolicy(strategies=["headings", "continued_pretraining"],
                                                             continued_pretraining_ratio=0.5), "About {title}?")
    assert [e["doc_id"] for e in again.examples] == [e["doc_id"] for e in mixed.examples]  # the same choice


def test_cloze_asks_a_long_sentence_by_its_clauses_and_answers_with_the_clause():
    from resources.knowledge.cloze import MAX_ANSWER_CHARS, cloze_questions
    from resources.knowledge.policy import KnowledgePolicy

    long = ("Support response targets are part of this agreement: Team tickets are answered within 1 business day, "
            "Business tickets within 8 hours on weekdays, and Enterprise P1 incidents within 1 hour.")
    short = "Retention rules delete archived boards after 90, 180 or 365 days, as the administrator chooses."
    found = cloze_questions([long, short], KnowledgePolicy().cloze_spacy_model, 8)
    asked = {c.question: c.answer for c in found[0]}
    assert len(long) > MAX_ANSWER_CHARS
    # each value asked with the whole sentence and with its clause; the answer is the clause that states it
    assert asked["Business tickets within how many hours on weekdays?"] == "Business tickets within 8 hours on weekdays."
    assert asked["Team tickets are answered within how many business days?"] == "Team tickets are answered within 1 business day."
    assert asked["Enterprise P1 incidents within how many hours?"] == "Enterprise P1 incidents within 1 hour."  # no "and"
    assert sum(q.startswith("Support response targets") for q in asked) == 3
    # a list of numbers is one value, not split into clauses; a short sentence is answered whole
    assert {c.question for c in found[1]} >= {"Retention rules delete archived boards after how many, 180 or 365 days?"}
    assert {c.answer for c in found[1]} == {short}


@pytest.mark.parametrize("label,value,phrase", [
    ("DATE", "25 days", "how many days"), ("TIME", "under 6 hours", "under how many hours"),
    ("PERCENT", "10%", "what percentage"), ("MONEY", "$8", "how much"), ("CARDINAL", "up to 50", "up to how many"),
    ("DATE", "31 March", "when"), ("DATE", "the 12 months", "how many months"), ("DATE", "last year", None),
    ("CARDINAL", "two", None)])
def test_cloze_question_phrases(label, value, phrase):
    from resources.knowledge.cloze import question_phrase

    assert question_phrase(label, value) == phrase


def test_real_package_readmes_give_chunks_and_examples(chunker):
    """Real documents no one on the project wrote: the READMEs (Markdown and reStructuredText) in the metadata
    of installed packages. Every one parses, chunks, and one with a section gives an example."""
    import importlib.metadata as md

    seen, examples = 0, 0
    for dist in sorted(md.distributions(), key=lambda d: d.metadata["Name"] or "")[:80]:
        body = dist.metadata.get_payload() if hasattr(dist.metadata, "get_payload") else None
        body = body or dist.metadata.get("Description")
        if not body or len(body) < 400:
            continue
        kind = (dist.metadata.get("Description-Content-Type") or "text/x-rst").lower()
        fmt = "md" if "markdown" in kind else "rst"
        doc = parse_document(body.encode(), fmt, f"{dist.metadata['Name']}.{fmt}")
        chunks = chunker.chunk({"doc_id": dist.metadata["Name"], "title": doc.title, "kind": "text", "text": doc.text})
        assert chunks, dist.metadata["Name"]
        assert all(doc.text[c["start"]:c["end"]] == c["text"] and c["tokens"] <= 64 for c in chunks)
        build = build_knowledge_examples(chunks, HEADINGS, "What is {title}?")
        examples += bool(build.examples)
        seen += 1
    assert seen >= 20 and examples >= 0.9 * seen, (seen, examples)


# -- the teacher (qa) over real HTTP -------------------------------------------------------------------------------
@pytest.fixture
def teacher_server():
    from servers.openai_server import serve
    from servers.scripted_teacher import build_teacher

    app = build_teacher()
    with serve(app) as url:
        yield url, app


TEACHER_DOCS = [("Pricing", "# Pricing\n\nThe Team plan costs $8 per user per month. It is billed yearly.\n"),
                ("Broken", "# Broken\n\nMALFORMED passage about nothing in particular at all.\n"),
                ("Refusal", "# Refusal\n\nREFUSE this passage about the data retention rules please.\n"),
                ("Empty", "# Empty\n\nEMPTY passage that gives the teacher nothing to ask about.\n"),
                ("Slow", "# Slow\n\nSLOW passage: the teacher takes longer than the client's timeout.\n"),
                ("Flaky", "# Flaky\n\nFLAKY passage: backups run nightly and are kept for 30 days.\n")]


def test_the_teacher_writes_pairs_the_judge_filters_and_every_failure_is_counted(tmp_path, chunker, teacher_server):
    """Against a scripted OpenAI-compatible teacher on 127.0.0.1 (a large teacher LLM cannot run here): malformed
    JSON, a refusal, an empty list and a timeout are dropped with their reasons; a 503 is retried; the judge drops
    the answer the passage does not support; calls run concurrently, bounded; a re-run is served from the cache."""
    from resources.knowledge.examples import qa_examples
    from resources.knowledge.teacher import TeacherModel

    url, app = teacher_server
    chunks = section_chunks(chunker, TEACHER_DOCS)
    teacher = TeacherModel(base_url=url, model="teacher", api_key="k", max_concurrency=3, max_retries=1, timeout_s=1.0,
                           cache_dir=str(tmp_path / "cache"))
    session = teacher.session()
    build = qa_examples(chunks, KnowledgePolicy(strategies=["qa"]), session)
    kept = [json.loads(e["messages"]) for e in build.examples]
    assert [m[1]["content"] for m in kept] == ["The Team plan costs $8 per user per month.",
                                               "FLAKY passage: backups run nightly and are kept for 30 days."]
    assert kept[0][0]["content"] == "What is stated about The Team plan costs?"
    reasons = {d["reason"] for d in build.dropped}
    assert reasons == {"malformed_json", "refused", "empty_list", "timeout", "unsupported"}
    assert build.counts["qa_generated"] == 4 and build.counts["qa_kept"] == 2 and build.counts["qa_dropped_unsupported"] == 2
    usage = session.usage.to_dict()
    assert usage["calls"] == 6 + 4 and usage["failed"] == 1 and usage["prompt_tokens"] > 0 and usage["stopped"] is None
    assert app.state.calls["qa"] == 8  # the 503 and the timeout were each retried once
    assert 2 <= app.state.max_in_flight <= 3  # concurrent, bounded by max_concurrency
    assert all(e["split_key"] == e["source_doc_id"] for e in build.examples)

    again = teacher.session()
    rebuilt = qa_examples(chunks, KnowledgePolicy(strategies=["qa"]), again)
    assert [e["messages"] for e in rebuilt.examples] == [e["messages"] for e in build.examples]
    assert again.usage.calls == 1 and again.usage.cached == 9  # only the timed-out passage was asked again


def test_the_teacher_writes_the_golden_set_from_held_out_documents_only(tmp_path, chunker, teacher_server):
    """knowledge.golden_from 'teacher': the held-out documents' passages (and only theirs) go to the scripted teacher;
    its judged pairs become golden rows naming their document."""
    from resources.datasets.builder import SplitRules
    from resources.knowledge.examples import held_out_qa
    from resources.knowledge.teacher import TeacherModel

    url, app = teacher_server
    topics = ["Backups run", "Invoices fall", "Sessions expire", "Webhooks retry", "Exports finish", "Guests leave",
              "Domains renew", "Tokens rotate", "Audits happen", "Holidays accrue", "Flights depart", "Receipts arrive"]
    docs = [(t.split()[0], f"# {t.split()[0]}\n\n{t} every {i + 3} days without exception. Nothing else is said.\n")
            for i, t in enumerate(topics)]
    chunks = section_chunks(chunker, docs)
    rules = SplitRules(validation_fraction=0.1, golden_holdout_fraction=0.4)
    held = {c["doc_id"] for c in chunks if rules.split_of(c["doc_id"]) == "golden"}
    assert 0 < len(held) < 12
    teacher = TeacherModel(base_url=url, model="teacher", api_key="k", cache_dir=str(tmp_path / "cache"))
    golden, build = held_out_qa(chunks, rules, KnowledgePolicy(strategies=["headings"], golden_from="teacher"),
                                teacher.session())
    assert golden and {g["source_doc_id"] for g in golden} == held
    assert all(g["origin"] == "holdout:qa" and g["split"] == "golden" and g["prompt"].endswith("?") for g in golden)
    sent = " ".join(app.state.prompts)
    assert all(t not in sent for i, t in enumerate(topics) if f"doc{i}" not in held)
    assert build.counts["qa_kept"] == len(golden)


def test_the_teacher_stops_at_its_cap_with_a_clear_message(tmp_path, chunker, teacher_server):
    from resources.knowledge.examples import qa_examples
    from resources.knowledge.teacher import TeacherModel

    url, _ = teacher_server
    chunks = section_chunks(chunker, [TEACHER_DOCS[0]] * 1 + [("More", "# More\n\nRefunds are issued within 14 days.\n"),
                                                              ("Third", "# Third\n\nInvoices are sent monthly.\n")])
    session = TeacherModel(base_url=url, model="teacher", max_calls_per_run=2, cache_dir=str(tmp_path / "c")).session()
    build = qa_examples(chunks, KnowledgePolicy(strategies=["qa"], qa_judge=False), session)
    assert "max_calls_per_run" in session.usage.stopped and session.usage.calls == 2
    assert [d["reason"] for d in build.dropped] == ["budget_exhausted"] and build.counts["qa_kept"] == 4
    assert TeacherModel().configured is False and TeacherModel(base_url=url).problems()  # model missing


def test_near_duplicate_generated_questions_are_dropped_and_counted(chunker):
    """Two passages whose teacher questions differ only in wording: the second is a near-duplicate (MinHash, as the
    corpus is de-duplicated) and is dropped as duplicate_question; a different question is kept."""
    from resources.knowledge.examples import qa_examples
    from resources.knowledge.teacher import Reply

    replies = iter([
        json.dumps([{"question": "How long is the free trial of the Team plan?", "answer": "The trial lasts 14 days."}]),
        json.dumps([{"question": "How long is the free trial on the Team plan?", "answer": "It lasts 14 days."},
                    {"question": "Who can cancel a subscription?", "answer": "Only the workspace owner."}]),
    ])

    class Session:
        def ask_many(self, asks, documents=None):
            return [Reply(next(replies)) for _ in asks]

    chunks = section_chunks(chunker, [("Trial", "# Trial\n\nThe trial lasts 14 days.\n"),
                                      ("Billing", "# Billing\n\nOnly the workspace owner can cancel.\n")])
    build = qa_examples(chunks, KnowledgePolicy(strategies=["qa"], qa_judge=False), Session())
    questions = [json.loads(e["messages"])[0]["content"] for e in build.examples]
    assert questions == ["How long is the free trial of the Team plan?", "Who can cancel a subscription?"]
    assert [d["reason"] for d in build.dropped] == ["duplicate_question"] and "Jaccard" in build.dropped[0]["detail"]


def test_the_teachers_cached_replies_name_their_documents_so_forget_finds_them(tmp_path, chunker, teacher_server):
    from resources.knowledge.examples import qa_examples
    from resources.knowledge.teacher import TeacherModel, cached_replies_of

    url, _ = teacher_server
    chunks = section_chunks(chunker, [("Plans", "# Plans\n\nThe Team plan costs $8 per user per month.\n"),
                                      ("Backups", "# Backups\n\nBackups run nightly and are kept for 30 days.\n")])
    cache = tmp_path / "cache"
    qa_examples(chunks, KnowledgePolicy(strategies=["qa"]), TeacherModel(base_url=url, model="teacher", cache_dir=str(cache)).session())
    plans = {c["doc_id"] for c in chunks if c["title"] == "Plans"}
    found = cached_replies_of(cache, plans)
    assert found and len(found) < len(list(cache.glob("*/*.json")))  # its question call and its judge calls only
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in found)
    assert cached_replies_of(cache, {"some-other-doc"}) == []


def test_raft_pairs_ask_the_companys_own_questions_in_the_served_prompt(chunker):
    """raft_pairs: a Q/A record's question with the passages retrieved for it (never the record itself); the answer
    as written, its sentence cited with the passage that states it; a question no retrieved passage answers
    teaches the abstention, within the abstention share."""
    docs = [("Tokens", "# Tokens\n\nAPI tokens expire after 90 days. Owners get an email 7 days before.\n"),
            ("Invites", "# Invites\n\nInvitations expire after 7 days and can be sent again.\n"),
            ("Exports", "# Exports\n\nA full export arrives as a ZIP file within 15 minutes.\n")]
    chunks = section_chunks(chunker, docs)
    pair = lambda i, q, a: {"doc_id": f"qa{i}", "external_id": f"QA-{i}", "kind": "instruction", "batch": "b",  # noqa: E731
                            "messages": json.dumps([{"role": "user", "content": q}, {"role": "assistant", "content": a}])}
    records = [pair(1, "How long do tokens last?", "Thanks for asking! API tokens expire after 90 days. Anything else?"),
               pair(2, "When does an invite lapse?", "Invitations expire after 7 days."),
               pair(3, "Can I pay with PayPal?", "PayPal is accepted on annual plans."),
               pair(4, "Is there a Linux app?", "There is a Linux app in beta."),
               {"doc_id": "kb", "kind": "text", "text": "no messages"}]
    asked = []

    def retrieve(questions, k):  # the record itself is retrieved first: it must never be its own passage
        asked.extend(questions)
        own = [{"chunk_id": r["doc_id"], "doc_id": r["doc_id"], "title": "", "section": "", "text": "the record"}
               for r in records[:4]]
        return [[{**own[i], "score": 0.9}] + [{**c, "score": 0.5} for c in chunks] for i in range(len(questions))]

    policy = KnowledgePolicy(strategies=["raft_pairs"], raft_distractors=2, raft_oracle_fraction=0.75)
    build = build_knowledge_examples([], policy, "{title}", retrieve=retrieve, records=records)
    assert asked == ["How long do tokens last?", "When does an invite lapse?", "Can I pay with PayPal?", "Is there a Linux app?"]
    by_question = {json.loads(e["messages"])[1]["content"]: json.loads(e["messages"]) for e in build.examples}
    tokens = by_question["How long do tokens last?"]
    assert tokens[2]["content"] == "API tokens expire after 90 days. [1]"  # the sentence it states, not the greeting
    assert "[1] Tokens\nAPI tokens expire after 90 days" in tokens[0]["content"] and "the record" not in tokens[0]["content"]
    assert by_question["When does an invite lapse?"][2]["content"] == "Invitations expire after 7 days. [2]"
    # two questions no passage answers; the share (1 - 0.75) / 0.75 of the two cited ones is room for one abstention
    assert build.counts["raft_pairs_with_oracle"] == 2 and build.counts["raft_pairs_abstain"] == 1
    assert build.counts["raft_pairs_dropped_no_supporting_passage"] == 1
    abstained = [m for q, m in by_question.items() if q in ("Can I pay with PayPal?", "Is there a Linux app?")]
    assert len(abstained) == 1 and abstained[0][2]["content"] == ABSTAIN
    assert {e["source_doc_id"] for e in build.examples} <= {"qa1", "qa2", "qa3", "qa4"}


def test_a_document_without_headings_gives_questions_in_proportion_to_its_passages(chunker):
    """A real hard-wrapped plain-text document no one here wrote and without a single heading (the Apache License
    that ships in botocore's metadata): raft asks about every passage's topic, not once for the whole document —
    at least one example per two passages — each question naming a noun phrase of its passage, each answer taken
    from it from the sentence that names it (the hard line breaks inside sentences read as spaces), one answer per
    question."""
    import importlib.metadata as md

    from resources.knowledge.examples import _unwrapped

    [text] = [f.read_text() for f in md.distribution("botocore").files if f.name in ("LICENSE.txt", "LICENSE")]
    assert "Apache License" in text and not re.search(r"(?m)^#", text)
    doc = parse_document(text.encode(), "txt", "LICENSE.txt")
    chunks = chunker.chunk({"doc_id": "apache", "title": "Apache License", "kind": "text", "text": doc.text})
    assert len(chunks) >= 20 and all(c["section"] == "" for c in chunks)

    others = section_chunks(chunker, [(f"Doc {i}", f"# Doc {i}\n\n## Topic {i}\n\nDocument {i} says {i}.\n") for i in range(4)])

    def retrieve(questions, k):  # other documents' passages as distractors (a passage's own section never is one)
        return [[{**p, "score": 0.5} for p in others][:k] for _ in questions]

    policy = KnowledgePolicy(strategies=["raft"], raft_distractors=2, raft_oracle_fraction=1.0, multi_passage_fraction=0.0)
    build = build_knowledge_examples(chunks, policy, "What is {title}?", retrieve=retrieve)
    asked = [json.loads(e["messages"]) for e in build.examples]
    assert len(asked) >= len(chunks) / 2, (len(asked), len(chunks), build.counts)
    assert build.counts["topics_generated"] >= 0.9 * (len(chunks) - 1)  # every passage but the one the title asks
    questions = [m[1]["content"] for m in asked]
    assert len(set(questions)) == len(questions)  # one answer per question
    by_chunk = {c["chunk_id"]: _unwrapped(c["text"]) for c in chunks}
    whole = [m[2]["content"] for m in asked if m[1]["content"].startswith("What does Apache License say about ")]
    assert whole and not [a for a in whole if "\n" in a]  # the hard line breaks inside sentences read as spaces
    for example, m in zip(build.examples, asked):
        question, answer = m[1]["content"], re.sub(r" ?\[\d\]$", "", m[2]["content"]).removesuffix(" …")
        if question.startswith("What does Apache License say about "):
            topic = question.removeprefix("What does Apache License say about ").removesuffix("?")
            assert topic.lower() in by_chunk[example["chunk_id"]].lower(), question
        assert " ".join(answer.split()) in " ".join(by_chunk[example["chunk_id"]].split()), answer  # from its passage


def test_titles_of_real_documents_are_their_own_titles():
    """tests/data/expected_titles.json, checked by hand: a lone top-level heading is the title; several top-level
    headings are sections (the file's name then); inline HTML and a trailing colon are not part of it; an HTML page
    takes its main content's <h1>, not a help overlay's heading; a PDF's first bookmark is not its title."""
    import email
    import importlib.metadata as md

    expected = json.loads((ROOT / "tests" / "data" / "expected_titles.json").read_text())["readmes"]
    got = {}
    for name in expected:
        meta = email.message_from_string(md.distribution(name).read_text("METADATA") or "")
        fmt = "md" if "markdown" in (meta.get("Description-Content-Type") or "").lower() else "rst"
        got[name] = parse_document(meta.get_payload().encode(), fmt, f"{name}.{fmt}").title
    assert got == expected
    page = ("<html><head><title>What is rustdoc? - The rustdoc book</title></head><body>"
            "<div class='menu'><h1 class='menu-title'>The rustdoc book</h1></div>"
            "<div id='help'><h2>Keyboard shortcuts</h2><p>Press S to search.</p></div>"
            "<main><h1>What is rustdoc?</h1><p>The standard Rust distribution ships with a tool called rustdoc.</p>"
            "<h2>Basic usage</h2><p>Let us give it a try.</p></main></body></html>")
    assert parse_document(page.encode(), "html", "what-is-rustdoc.html").title == "What is rustdoc?"
    titled = "<html><head><title>Release notes</title></head><body><h2>Fixes</h2><p>a</p><h2>Changes</h2><p>b</p></body></html>"
    assert parse_document(titled.encode(), "html", "notes.html").title == "Release notes"
    numbered = "# 1 Introduction\n\nText.\n"
    assert parse_document(numbered.encode(), "md", "guide/user_guide.md").title == "user guide"
