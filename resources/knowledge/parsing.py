"""Documents of any format -> one canonical text with its structure.

Every document format becomes Markdown text whose section headings are ATX lines (`#`, `##`, ...): a
Markdown file keeps its text (Setext headings rewritten as ATX), reStructuredText-style underlined and
numbered headings of plain text become ATX lines, HTML `h1`-`h6`, DOCX heading styles and the PDF outline
likewise. The section tree is then a function of the text alone (`outline`), so it can be read again from
the *redacted* text, whose character offsets are what chunks index.

Parsers: markdown-it-py (Markdown), BeautifulSoup (HTML), pypdf (PDF), python-docx (DOCX).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath

DOCUMENT_FORMATS = ("md", "markdown", "txt", "rst", "html", "htm", "pdf", "docx")
BINARY_FORMATS = ("pdf", "docx")


class ParseError(ValueError):
    """A document that cannot become text; `reason` is the short code in the quarantine table."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Section:
    """One heading and the text under it, up to the next heading of any level: text[start:end]."""

    path: tuple[str, ...]  # the heading and its ancestors, outermost first
    level: int  # 0 = text before the first heading
    start: int
    end: int


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    text: str  # canonical Markdown: headings are ATX lines
    headings: int  # headings found (0: the title is the file name)


# -- the section tree of a canonical text --------------------------------------------------------------
@lru_cache(maxsize=1)
def _block_parser():
    """CommonMark's block structure only: headings and their raw text, without parsing the inline markup."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").disable("inline")


def outline(text: str) -> list[Section]:
    """Sections of a canonical (or any Markdown) text, in order, covering it without gaps: headings are what
    markdown-it-py parses as headings (a `#` line inside a code block is not one)."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    heads = []  # (char offset of the heading line, level, heading text)
    tokens = _block_parser().parse(text)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            heads.append((line_starts[token.map[0]], int(token.tag[1]), tokens[i + 1].content.strip()))
    sections, stack = [], []
    if not heads or heads[0][0] > 0:
        sections.append(Section((), 0, 0, heads[0][0] if heads else len(text)))
    for n, (start, level, heading) in enumerate(heads):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        end = heads[n + 1][0] if n + 1 < len(heads) else len(text)
        sections.append(Section(tuple(h for _, h in stack), level, start, end))
    return [s for s in sections if text[s.start:s.end].strip()]


# -- parsing --------------------------------------------------------------------------------------------
def parse_document(data: bytes, fmt: str, rel: str) -> ParsedDocument:
    """The canonical text and title of one document file; raises ParseError naming the file and reason."""
    fmt, declared = fmt.lower(), None
    if fmt in ("md", "markdown"):
        text = _markdown(_decode(data, rel))
    elif fmt in ("txt", "rst"):
        text = _underlined(_decode(data, rel))
    elif fmt in ("html", "htm"):
        text, declared = _html(_decode(data, rel))
    elif fmt == "pdf":
        text = _pdf(data, rel)
    elif fmt == "docx":
        text = _docx(data, rel)
    else:
        raise ParseError("unsupported_format", f"{rel}: .{fmt} is not a document format ({', '.join(DOCUMENT_FORMATS)})")
    text = _tidy(text)
    if not text.strip():
        raise ParseError("no_text", f"{rel}: the {fmt.upper()} file parses to no text"
                         + (" (a scanned PDF needs OCR, which tuneforge does not do)" if fmt == "pdf" else ""))
    sections = [s for s in outline(text) if s.level]
    return ParsedDocument(title=document_title(sections, rel, declared), text=text, headings=len(sections))


# Headings that name a part of a document, never the document (a README's first heading is often one of them, its
# title being an image; a site's help overlay puts "Keyboard shortcuts" first on every page)
_GENERIC_HEADINGS = frozenset({
    "introduction", "overview", "documentation", "docs", "installation", "install", "installing", "usage",
    "quick start", "quickstart", "getting started", "features", "requirements", "system requirements", "sponsors",
    "sponsor", "contents", "table of contents", "license", "licence", "about", "readme", "summary", "abstract",
    "preface", "keyboard shortcuts", "navigation", "menu", "contributing", "changelog", "changes", "examples",
    "example", "support", "help", "background"})
_SECTION_NUMBER = re.compile(r"^(?:\d{1,2}(?:\.\d{1,2})*\.?|chapter\s+\d+|[ivx]{1,4}\.)\s+", re.IGNORECASE)
_INLINE_HTML = re.compile(r"<[^>\n]{1,400}>")


def document_title(sections: list[Section], rel: str, declared: str | None = None) -> str:
    """The document's title: its lone top-level heading (docutils' rule: a lone top-level section title is the
    document's title; a PDF's metadata title and a Markdown front matter's `title:` head the canonical text as
    one), unless it names a part ("Installation", "Keyboard shortcuts") or is numbered like a section ("1
    Introduction"); else — several top-level headings are the document's sections — the title the file declares
    (an HTML page's main <h1>, else its <title>); else the file's name. Inline HTML in a heading ("Vega-Altair <a
    href…><img …>") and a trailing colon are not part of a title."""
    def clean(heading: str) -> str:
        return re.sub(r"\s+", " ", _INLINE_HTML.sub(" ", heading)).strip().rstrip(":").strip()

    def usable(heading: str) -> bool:
        words = clean(heading)
        return bool(re.search(r"\w", words)) and words.casefold() not in _GENERIC_HEADINGS \
            and not _SECTION_NUMBER.match(words)

    top = [s.path[-1] for s in sections if s.level == min((x.level for x in sections), default=0)]
    if len(top) == 1 and usable(top[0]):
        return clean(top[0])
    if declared and usable(declared):
        return clean(declared)
    return _file_title(rel)


def _file_title(rel: str) -> str:
    stem = PurePosixPath(rel).stem
    return re.sub(r"[_]+", " ", stem).strip() or stem


def _decode(data: bytes, rel: str) -> str:
    """UTF-8 (with or without a BOM), else the legacy encoding charset-normalizer finds (a Latin-1 or Windows-1252
    text file, a UTF-16 export); bytes that no encoding reads as text are refused, naming the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        from charset_normalizer import from_bytes

        results = from_bytes(data)
        best = results.best()
        if best is None or best.encoding in ("utf_8", "utf-8"):
            raise ParseError("invalid_utf8", f"{rel}: invalid UTF-8 at byte {err.start}, and no other text encoding "
                             "reads it") from None
        # a few accented letters fit several single-byte code pages equally well (£ is Ł in cp1250): among the
        # equally plausible, Windows-1252 (what the web reads a Latin-1 label as) is the one Western text was written in
        western = next((m for m in results if m.chaos <= best.chaos and WESTERN & set(m.could_be_from_charset)), None)
        if western is not None:
            return data.decode("cp1252" if "cp1252" in western.could_be_from_charset else western.encoding,
                               errors="replace").removeprefix("\ufeff")
        return str(best).removeprefix("\ufeff")


WESTERN = {"cp1252", "latin_1", "iso8859_15"}


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"^(#{1,6} .*?)[ \t]*[¶§]+[ \t]*$", r"\1", text, flags=re.MULTILINE)  # Sphinx/anchor marks
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)


def _front_matter(text: str) -> tuple[str | None, str]:
    """(its `title:`, the text after it) for a Markdown file that opens with a YAML front-matter block (Jekyll, Hugo,
    MkDocs, Docusaurus); (None, text) otherwise. The block is metadata, not content: left in, `title: X` over the
    closing `---` reads as a heading and the keys as a passage."""
    import yaml

    found = _FRONT_MATTER.match(text)
    if not found:
        return None, text
    try:
        meta = yaml.safe_load(found.group(1))
    except yaml.YAMLError:
        return None, text
    if not isinstance(meta, dict):
        return None, text
    title = meta.get("title")
    return (str(title).strip() or None) if isinstance(title, (str, int, float)) else None, text[found.end():]


def _markdown(text: str) -> str:
    """Markdown stays as it is, with Setext headings (a line underlined by === or ---) rewritten as ATX; a YAML
    front-matter block is taken off, its `title:` heading the text unless the text opens with that heading."""
    title, text = _front_matter(text.replace("\r\n", "\n"))
    if title and not re.match(rf"\s*#\s+{re.escape(title)}\s*(\n|$)", text):
        text = f"# {title}\n\n{text}"
    lines = text.split("\n")
    tokens = _block_parser().parse("\n".join(lines))
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.markup in ("=", "-") and token.map:
            first, last = token.map  # heading text lines, then the underline
            lines[first] = "#" * int(token.tag[1]) + " " + tokens[i + 1].content.replace("\n", " ").strip()
            for j in range(first + 1, last):
                lines[j] = None
    return "\n".join(line for line in lines if line is not None)


_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+_:.])\1{2,}\s*$")
_NUMBERED = re.compile(r"^(\d{1,2}(?:\.\d{1,2}){0,3})\.?\s+([A-Z][^\n]{0,78})$")


def _underlined(text: str) -> str:
    """Plain text and reStructuredText: a line underlined (or over- and underlined) by a run of one
    punctuation character (three or more) is a heading, its level set by the order in which each
    adornment style first appears (the reStructuredText rule); a short capitalised line numbered like
    `2.1 Scope`, alone between blank lines, is a heading of level = its depth."""
    lines = text.replace("\r\n", "\n").split("\n")
    styles: list[tuple[str, bool]] = []
    out: list[str] = []
    i = 0

    def heading(title: str, style: tuple[str, bool]) -> str:
        if style not in styles:
            styles.append(style)
        return "#" * min(6, styles.index(style) + 1) + " " + title.strip()

    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        after = lines[i + 2] if i + 2 < len(lines) else ""
        over = _ADORNMENT.match(line)
        if over and nxt.strip() and not _ADORNMENT.match(nxt) and _ADORNMENT.match(after) \
                and after.strip()[0] == line.strip()[0] and len(line.strip()) >= len(nxt.strip()):
            out.append(heading(nxt, (line.strip()[0], True)))
            i += 3
            continue
        under = _ADORNMENT.match(nxt)
        if line.strip() and not line.startswith((" ", "\t")) and not _ADORNMENT.match(line) and under \
                and len(line.strip()) <= 120:  # an underline shorter than its title still makes one (as docutils)
            out.append(heading(line, (nxt.strip()[0], False)))
            i += 2
            continue
        numbered = _NUMBERED.match(line)
        if numbered and not (i and lines[i - 1].strip()) and not nxt.strip() and not line.rstrip().endswith((".", ",", ";", ":")):
            out.append("#" * min(6, numbered.group(1).count(".") + 1) + " " + line.strip())
            i += 1
            continue
        out.append(line)  # a Markdown `#` line in a .txt file is a heading too
        i += 1
    return "\n".join(out)


def _escape_atx(line: str) -> str:
    """A body line that Markdown would read as a heading (`# ...`, as in a shell comment) keeps its text
    but not the heading: the canonical text's headings are only the ones the parser found."""
    return "\\" + line if re.match(r"^ {0,3}#{1,6}(\s|$)", line) else line


_BLOCKS = {"p", "div", "li", "br", "tr", "pre", "section", "article", "table", "ul", "ol", "blockquote", "dd", "dt",
           "header", "footer", "main", "aside", "figure", "figcaption", "hr"}


def _html(markup: str) -> tuple[str, str | None]:
    """(text of the page body — scripts, styles and templates left out, one block per paragraph, `h1`-`h6` as
    headings, the page's <title> heading it when no <h1> does —, the title the page declares: the first <h1> of
    its main content (<main>, <article>, role=main), else its <title>)."""
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    main = soup.find("main") or soup.find("article") or soup.find(attrs={"role": "main"})
    main_h1 = main.find("h1") if main else None
    declared = (main_h1.get_text(" ", strip=True) if main_h1 else "") or page_title or None
    if soup.head:
        soup.head.decompose()
    for level in range(1, 7):
        for tag in soup.find_all(f"h{level}"):
            tag.replace_with(NavigableString(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n"))
    for tag in soup.find_all(_BLOCKS):
        tag.insert_after(NavigableString("\n\n" if tag.name in ("p", "div", "table", "ul", "ol", "pre") else "\n"))
    lines = [_escape_atx(re.sub(r"[ \t\xa0]+", " ", line).strip()) if not line.lstrip().startswith("#")
             else line.strip() for line in soup.get_text().split("\n")]
    text = "\n".join(lines)
    if page_title and not re.search(r"^# ", text, flags=re.MULTILINE):
        text = f"# {page_title}\n\n{text}"
    return text, declared


def _pdf(data: bytes, rel: str) -> str:
    """Text of every page (pypdf); the PDF outline (bookmarks), where there is one, gives the headings: each
    entry becomes a heading at the start of its page, replacing the line that carries its title there. The
    document's own title (its metadata) heads the text."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception:  # noqa: BLE001 - an unknown or unsupported cipher
                opened = 0
            if not opened:
                raise ParseError("encrypted_pdf", f"{rel}: the PDF is encrypted with a password; decrypt it first")
        pages = [page.extract_text() or "" for page in reader.pages]
        doc_title = str((reader.metadata or {}).get("/Title") or "").strip()
        marks = _pdf_outline(reader, reader.outline, 2 if doc_title else 1)  # under the document's title, if it has one
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as err:
        raise ParseError("malformed_pdf", f"{rel}: not a readable PDF ({type(err).__name__}: {err})") from None
    pages = [[_escape_atx(line) for line in page.split("\n")] for page in pages]
    for page_no, level, title in reversed(marks):
        if not (0 <= page_no < len(pages)):
            continue
        lines = pages[page_no]
        hit = next((n for n, line in enumerate(lines) if line.strip().lower() == title.strip().lower()), None)
        if hit is None:
            lines.insert(0, "#" * min(6, level) + " " + title.strip())
        else:
            lines[hit] = "#" * min(6, level) + " " + title.strip()
    body = "\n\n".join("\n".join(lines) for lines in pages)
    return f"# {doc_title}\n\n{body}" if doc_title and body.strip() else body


def _pdf_outline(reader, items, level: int) -> list[tuple[int, int, str]]:
    marks = []
    for item in items or []:
        if isinstance(item, list):
            marks.extend(_pdf_outline(reader, item, level + 1))
            continue
        try:
            marks.append((reader.get_destination_page_number(item), level, str(item.title)))
        except Exception:  # noqa: BLE001 - an outline entry without a resolvable page is skipped
            continue
    return sorted(marks, key=lambda m: m[0])


def _docx(data: bytes, rel: str) -> str:
    """Paragraphs and tables in document order (python-docx); `Title` and `Heading N` styles are headings."""
    import zipfile

    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ParseError("malformed_docx", f"{rel}: not a readable DOCX file ({type(err).__name__}: {err})") from None
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    out = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            style = (block.style.name if block.style is not None else "") or ""
            level = 1 if style == "Title" else int(m.group(1)) + (1 if _has_title(document) else 0) \
                if (m := re.match(r"Heading (\d)", style)) else 0
            out.append("#" * min(6, level) + " " + text if level and text else _escape_atx(text))
        elif isinstance(block, Table):
            for row in block.rows:
                out.append(" | ".join(cell.text.strip() for cell in row.cells))
            out.append("")
    return "\n\n".join(line for line in out)


def _has_title(document) -> bool:
    return any((p.style is not None and p.style.name == "Title") for p in document.paragraphs[:5])
