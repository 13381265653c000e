"""The policy model's raw documents: no question/answer shape, three formats, one long.

- `handbooks/employee_handbook.docx` (python-docx): Title, Heading 1/2 sections, a table.
- `handbooks/services_agreement.pdf` (fpdf2): numbered clauses, each a PDF outline entry (bookmark).
- `handbooks/admin_manual.md`: the administrator manual, 60 sections, over 50,000 characters (a document any
  record limit would have refused).

The facts the golden set asks about (`DOCUMENT_GOLDEN`, with `must_include`) each stand in exactly one section.
No PII, no randomness: the bytes are the same on every run (fixed dates inside the files and the zip).
"""

from __future__ import annotations

import datetime
import io
import zipfile

FIXED = datetime.datetime(2026, 11, 2, 9, 0, tzinfo=datetime.timezone.utc)

HANDBOOK = [
    ("Working at Quillstack", "This handbook describes how Quillstack staff take leave, claim expenses and leave the company."),
    ("Leave", "Full-time staff get 25 days of paid annual leave each calendar year, plus public holidays."),
    ("Carry-over", "Up to 5 unused days of annual leave carry over into the next year; the rest lapse on 31 March."),
    ("Parental leave", "Parents get 20 weeks of fully paid parental leave, to be taken within the child's first year."),
    ("Expenses", "Expenses are claimed in the finance tool within 60 days of the purchase, with the receipt attached."),
    ("Travel", "Staff book economy class for flights under 6 hours; longer flights may be booked in premium economy."),
    ("Leaving", "The notice period is 1 month during probation and 3 months after it, from either side."),
]
AGREEMENT = [
    ("1. Services", "Quillstack provides the hosted Quillstack service to the Customer under this agreement."),
    ("2. Availability", "Quillstack makes the service available 99.9% of each calendar month, planned maintenance excluded."),
    ("3. Service credits", "For each month below 99.9% availability the Customer receives a service credit of 10% of "
     "that month's fees, up to 30% of the month's fees."),
    ("4. Fees and payment", "Invoices are payable within 30 days of the invoice date; late amounts bear interest of 1% a month."),
    ("5. Liability", "Each party's total liability is capped at the fees paid in the 12 months before the claim."),
    ("6. Term and termination", "The agreement runs for 12 months and renews for 12 months unless either party gives "
     "60 days' written notice before the renewal date."),
]
MANUAL_TOPICS = [
    ("Workspaces", "A workspace holds boards, members and settings; an owner can create up to 20 workspaces."),
    ("Audit log", "The audit log keeps every administrative action for 400 days and can be exported as CSV."),
    ("SCIM provisioning", "SCIM provisioning creates and removes members from the identity provider within 5 minutes."),
    ("IP allow lists", "An IP allow list holds up to 50 address ranges in CIDR notation, checked on every sign-in."),
    ("Data export", "A full workspace export is ready within 24 hours and the download link stays valid for 7 days."),
    ("Retention rules", "Retention rules delete archived boards after 90, 180 or 365 days, as the administrator chooses."),
    ("Session timeout", "Sessions end after 12 hours of inactivity; administrators can shorten the timeout to 15 minutes."),
    ("Guest accounts", "Guests see only the boards they are invited to and cannot create boards of their own."),
    ("Webhooks", "A webhook is disabled after 10 consecutive failed deliveries and the owner is e-mailed."),
    ("Rate limits", "The REST API allows 600 requests per minute per token; the limit resets every minute."),
    ("Custom domains", "A custom domain is verified with a TXT record and its certificate renews automatically."),
    ("Two-factor authentication", "Administrators can require two-factor authentication for every member of a workspace."),
]
DOCUMENT_GOLDEN = [
    ("D-001", "How many days of paid annual leave do full-time staff get?",
     "Full-time staff get 25 days of paid annual leave each year, plus public holidays.", ["25 days"]),
    ("D-002", "How many unused leave days can be carried over into the next year?",
     "Up to 5 unused days of annual leave carry over; the rest lapse on 31 March.", ["5"]),
    ("D-003", "What service credit does a customer get for a month below the availability commitment?",
     "A service credit of 10% of that month's fees, up to 30% of the month's fees.", ["10%"]),
    ("D-004", "Within how many days must invoices be paid?", "Invoices are payable within 30 days of the invoice date.",
     ["30 days"]),
    ("D-005", "How long does the audit log keep administrative actions?",
     "The audit log keeps every administrative action for 400 days.", ["400 days"]),
]

# The policy model's golden questions about the handbook and the services agreement (each held out of training
# whole as a golden source; the administrator manual trains): (id, question, reference, source file, facts).
HANDBOOK_GOLDEN = [
    ("H-001", "How many days of paid annual leave do full-time staff get?",
     "Full-time staff get 25 days of paid annual leave each calendar year, plus public holidays.", "employee_handbook.docx", ["25 days"]),
    ("H-002", "How many unused leave days can be carried over into the next year?",
     "Up to 5 unused days of annual leave carry over into the next year; the rest lapse on 31 March.", "employee_handbook.docx",
     ["5 unused days"]),
    ("H-003", "On what date do unused annual leave days lapse?",
     "Up to 5 unused days of annual leave carry over into the next year; the rest lapse on 31 March.", "employee_handbook.docx",
     ["31 March"]),
    ("H-004", "How many weeks of paid parental leave do parents get?",
     "Parents get 26 weeks of fully paid parental leave, to be taken within the child's first year.", "employee_handbook.docx",
     ["26 weeks"]),
    ("H-005", "Within how many days of a purchase must an expense be claimed?",
     "Expenses are claimed in the finance tool within 60 days of the purchase, with the receipt attached.",
     "employee_handbook.docx", ["60 days"]),
    ("H-006", "Up to what flight length do staff book economy class?",
     "Staff book economy class for flights under 6 hours; longer flights may be booked in premium economy.",
     "employee_handbook.docx", ["6 hours"]),
    ("H-007", "What is the notice period once probation is over?",
     "The notice period is 1 month during probation and 3 months after it, from either side.", "employee_handbook.docx",
     ["3 months"]),
    ("H-008", "What service credit does a customer get for a month below the availability commitment?",
     "For each month below 99.9% availability the Customer receives a service credit of 10% of that month's fees, up to "
     "30% of the month's fees.", "services_agreement.pdf", ["10%"]),
    ("H-009", "Within how many days must invoices be paid?",
     "Invoices are payable within 30 days of the invoice date; late amounts bear interest of 1% a month.",
     "services_agreement.pdf", ["30 days"]),
    ("H-010", "What interest do late payments bear?",
     "Invoices are payable within 30 days of the invoice date; late amounts bear interest of 1% a month.",
     "services_agreement.pdf", ["1% a month"]),
    ("H-011", "What share of each month does the services agreement promise the service is available?",
     "Quillstack makes the service available 99.9% of each calendar month, planned maintenance excluded.",
     "services_agreement.pdf", ["99.9%"]),
    ("H-012", "What is each party's total liability capped at?",
     "Each party's total liability is capped at the fees paid in the 12 months before the claim.", "services_agreement.pdf",
     ["12 months"]),
    ("H-013", "How much notice stops the agreement from renewing?",
     "The agreement renews for 12 months unless either party gives 60 days' written notice before the renewal date.",
     "services_agreement.pdf", ["60 days"]),
]

# The knowledge benchmark's golden set (policy/golden_documents.jsonl): a question, in the words people use, for
# each fact the documents (handbooks/ and policies/) state, with the facts an answer must include, and questions
# they do not answer (tag `unanswerable`: the right answer says so). The first five are DOCUMENT_GOLDEN.
KNOWLEDGE_GOLDEN = DOCUMENT_GOLDEN + [
    ("K-H3", "How many weeks of paid parental leave do parents get?",
     "Parents get 20 weeks of fully paid parental leave, taken within the child's first year.", ["20 weeks"]),
    ("K-H4", "Within how many days of a purchase must an expense be claimed?",
     "Expenses are claimed in the finance tool within 60 days of the purchase, with the receipt.", ["60 days"]),
    ("K-H5", "Up to what flight length do staff book economy class?",
     "Staff book economy class for flights under 6 hours; longer flights may be premium economy.", ["6 hours"]),
    ("K-H6", "What is the notice period once probation is over?", "The notice period is 3 months after probation (1 month during it), from either side.",
     ["3 months"]),
    ("K-H7", "On what date do unused annual leave days lapse?", "Unused annual leave beyond the 5 days carried over lapses on 31 March.",
     ["31 March"]),
    ("K-A1", "What share of each month does the services agreement promise the service is available?",
     "The service is available 99.9% of each calendar month, planned maintenance excluded.", ["99.9%"]),
    ("K-A4", "What interest do late payments bear?", "Invoices are payable within 30 days; late amounts bear interest of 1% a month.", ["1%"]),
    ("K-A5", "What is each party's total liability capped at?",
     "Each party's total liability is capped at the fees paid in the 12 months before the claim.", ["12 months"]),
    ("K-A6", "How much notice stops the agreement from renewing?",
     "Either party gives 60 days' written notice before the renewal date to stop the renewal.", ["60 days"]),
    ("K-M1", "How many workspaces can one owner create?", "A workspace owner can create up to 20 workspaces.", ["20"]),
    ("K-M3", "How quickly does SCIM provisioning add or remove members?",
     "SCIM provisioning creates and removes members from the identity provider within 5 minutes.", ["5 minutes"]),
    ("K-M4", "How many address ranges fit in an IP allow list?", "An IP allow list holds up to 50 address ranges in CIDR notation.",
     ["50"]),
    ("K-M5", "How long does a full workspace export take to be ready?",
     "A full workspace export is ready within 24 hours; its download link stays valid for 7 days.", ["24 hours"]),
    ("K-M6", "After how many hours of inactivity does a session end?",
     "Sessions end after 12 hours of inactivity, unless an administrator shortens the timeout.", ["12 hours"]),
    ("K-M7", "After how many failed deliveries in a row is a webhook disabled?",
     "A webhook is disabled after 10 consecutive failed deliveries and the owner is e-mailed.", ["10"]),
    ("K-M9", "What is the shortest session timeout an administrator can set?",
     "Administrators can shorten the session timeout to as little as 15 minutes.", ["15 minutes"]),
    ("K-P1", "How long do deleted cards stay in the Trash?", "Deleted cards and boards stay in the Trash for 30 days, where members can restore them.",
     ["30 days"]),
    ("K-P2", "How often are backups taken?", "Backups are taken every 6 hours and kept for 35 days.", ["6 hours"]),
    ("K-P3", "For how long are backups kept?", "Backups are kept for 35 days, so purged data leaves the backups within 35 days.", ["35 days"]),
    ("K-P4", "How long are audit log entries kept on the Enterprise plan?",
     "Audit log entries are kept for 3 years on the Enterprise plan (1 year on Business).", ["3 years"]),
    ("K-P5", "How long are support tickets kept once closed?", "Support tickets are kept for 2 years after they are closed.",
     ["2 years"]),
    ("K-P6", "Which encryption protects customer data at rest?", "Customer data is encrypted at rest with AES-256 and in transit with TLS 1.2 or higher.",
     ["AES-256"]),
    ("K-P7", "How soon are affected customers told about a confirmed breach?",
     "If a breach affecting customer data is confirmed, affected customers are notified within 72 hours.", ["72 hours"]),
    ("K-P8", "How fast are vulnerability reports acknowledged?",
     "Vulnerabilities reported by researchers or customers are acknowledged within 2 business days.", ["2 business days"]),
    ("K-P9", "What monthly uptime is committed for Enterprise workspaces?",
     "The monthly uptime commitment is 99.95% for Enterprise workspaces (99.9% for Business).", ["99.95%"]),
    ("K-P10", "How fast are Business support tickets answered?",
     "Business tickets are answered within 8 hours on weekdays.", ["8 hours"]),
    ("K-P11", "How far in advance must Quillstack be told about security testing?",
     "Security testing needs Quillstack to be notified at least 10 business days in advance.", ["10 business days"]),
    ("K-P12", "How far in advance is scheduled maintenance announced?",
     "Scheduled maintenance is announced at least 72 hours in advance.", ["72 hours"]),
]
UNANSWERABLE_GOLDEN = [
    ("U-1", "How many parking spaces does each office have?"),
    ("U-2", "What is the dress code in the office?"),
    ("U-3", "Which programming language is the mobile app written in?"),
    ("U-4", "What is the budget for the annual team offsite?"),
    ("U-5", "Who founded Quillstack, and in which year?"),
    ("U-6", "Which airline do staff have to fly with?"),
]
UNANSWERED = "The documents do not answer this question."


def _stable_zip(data: bytes) -> bytes:
    """The same archive with fixed entry dates (python-docx stamps each entry with the time it was written)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=FIXED.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, src.read(item.filename))
    return out.getvalue()


# The handbook's December 2026 revision: parental leave goes from 20 to 26 weeks (a changed fact; the revised file
# arrives in a later batch and supersedes the first).
HANDBOOK_REVISED = [(h, t.replace("20 weeks", "26 weeks")) for h, t in HANDBOOK]


def handbook_docx(sections: list[tuple[str, str]] = HANDBOOK) -> bytes:
    from docx import Document

    document = Document()
    document.core_properties.created = document.core_properties.modified = FIXED.replace(tzinfo=None)
    document.add_heading("Quillstack employee handbook", level=0)
    for n, (heading, text) in enumerate(sections):
        document.add_heading(heading, level=2 if heading in ("Carry-over", "Parental leave", "Travel") else 1)
        document.add_paragraph(text)
        if n == 4:
            table = document.add_table(rows=3, cols=2)
            for row, (what, limit) in zip(table.rows, [("Meal", "EUR 40 a day"), ("Hotel", "EUR 180 a night"),
                                                        ("Taxi", "when no public transport runs")]):
                row.cells[0].text, row.cells[1].text = what, limit
    out = io.BytesIO()
    document.save(out)
    return _stable_zip(out.getvalue())


def agreement_pdf() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(FIXED)
    pdf.set_title("Quillstack master services agreement")
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 14)
    pdf.cell(text="Quillstack master services agreement", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=11)
    pdf.multi_cell(0, 6, "Between Quillstack Inc. and the Customer named in the order form.")
    for heading, text in AGREEMENT:
        pdf.ln(4)
        pdf.start_section(heading)
        pdf.set_font("helvetica", "B", 12)
        pdf.cell(text=heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def admin_manual() -> str:
    """~60 sections: each topic with its fact, then procedures and troubleshooting written around it."""
    parts = ["# Quillstack administrator manual", "",
             "This manual is for workspace owners and administrators. Each chapter covers one setting.", ""]
    for n, (topic, fact) in enumerate(MANUAL_TOPICS, start=1):
        parts += [f"## {n}. {topic}", "", fact, ""]
        for sub in ("Before you start", "Step by step", "Troubleshooting", "Related settings"):
            parts += [f"### {topic}: {sub.lower()}", ""]
            parts += [(f"{sub} for {topic.lower()}: open Settings, choose {topic}, and review each option on the page. "
                       f"Changes to {topic.lower()} apply to the whole workspace and are recorded in the audit log. "
                       "Members see the change the next time they load a board. ") * 4, ""]
    return "\n".join(parts)


def documents() -> dict[str, bytes]:
    """Relative path under the policy inbox -> bytes."""
    return {"handbooks/employee_handbook.docx": handbook_docx(), "handbooks/services_agreement.pdf": agreement_pdf(),
            "handbooks/admin_manual.md": admin_manual().encode("utf-8"),
            # a later batch: the handbook's revision, which supersedes the first (same file name in its batch)
            "updates_2026_12/employee_handbook.docx": handbook_docx(HANDBOOK_REVISED)}
