"""Write tests/data/pii_heldout.jsonl: a labelled redaction set that shares nothing with the sample corpus.

The sample corpus is made by scripts/generate_sample_corpus.py with Faker's en_US locale and its own templates.
This set uses 16 other Faker locales (names from many cultures, romanised where Faker has it; their e-mail
addresses, phone numbers, IBANs and street addresses), a hand-written SSN and employee-id generator, dates of
birth in several formats and its own sentence templates (tickets, HR notes, billing). Some names are written
in lower case or capitals, as people type them. Each record lists its planted values; the `keep` records are
look-alikes (product names, acronyms, team names, dates and amounts that are facts) that must come out
unchanged, to measure over-redaction. The set was committed before the rules were changed against it.

    .venv/bin/python scripts/make_pii_heldout.py [--seed 20261204]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from faker import Faker

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "pii_heldout.jsonl"
LOCALES = ["en_GB", "en_IN", "en_AU", "en_CA", "en_IE", "de_DE", "fr_FR", "es_ES", "es_MX", "it_IT", "pt_BR", "nl_NL",
           "pl_PL", "sv_SE", "tr_TR", "id_ID", "ja_JP", "zh_CN"]
ROMANISED = {"ja_JP", "zh_CN"}
ADDRESS_LOCALES = ["en_GB", "en_AU", "en_CA", "en_IE", "en_NZ"]  # house number + street type, as the policy defines it

TEMPLATES = [
    "Ticket from {PERSON}: I cannot sign in since Monday, call me on {PHONE_NUMBER}.",
    "Please change the billing contact to {PERSON} ({EMAIL_ADDRESS}) before the next invoice.",
    "Refund the charge on card {CREDIT_CARD}; the cardholder is {PERSON}.",
    "Wire the deposit to IBAN {IBAN_CODE}, account holder {PERSON}.",
    "Suspicious sign-in for {EMAIL_ADDRESS} from {IP_ADDRESS} at 03:12 last night.",
    "HR note: {PERSON}, SSN {US_SSN}, moves to the night shift in May.",
    "Send the replacement badge to {STREET_ADDRESS}, attention {PERSON}.",
    "New starter {PERSON}, date of birth {DATE_OF_BIRTH}, badge {EMPLOYEE_ID}.",
    "{PERSON} asked whether {PERSON} could approve the purchase order.",
    "Escalated by {PERSON}; the customer is reachable at {PHONE_NUMBER} or {EMAIL_ADDRESS}.",
    "Contractor {PERSON} (born {DATE_OF_BIRTH}) needs VPN access from {IP_ADDRESS}.",
    "Payroll: pay {PERSON} into {IBAN_CODE} from next month.",
    "The courier could not find {STREET_ADDRESS}; please confirm with {PERSON} on {PHONE_NUMBER}.",
    "Meeting notes: {PERSON} and {PERSON} agreed to move the launch; {PERSON} will tell the customer.",
    "Card {CREDIT_CARD} was declined twice for {EMAIL_ADDRESS}.",
    "Background check for {PERSON}: SSN {US_SSN}, DOB {DATE_OF_BIRTH}.",
    "hi, this is {person_lower}, my manager told me to write to you about the export",
    "FROM: {PERSON_UPPER} - RE: overdue invoice for the Team plan",
    "Thanks, {PERSON} - and copy {EMAIL_ADDRESS} on the reply please.",
    "Employee {EMPLOYEE_ID} ({PERSON}) reported a lost laptop; last seen at {IP_ADDRESS}.",
]

KEEP = [
    "Quillstack Sync and Quillstack Boards are included in the Business plan.",
    "We run on Kubernetes with PostgreSQL, Redis and Kafka behind an NGINX ingress.",
    "GDPR, HIPAA and SOC 2 Type II reports are available to Enterprise customers.",
    "Sign in with SAML through Okta, Azure AD or Google Workspace.",
    "The API returns JSON over HTTPS; rate limits are 600 requests per minute.",
    "The Team plan costs $8 per user per month; exports arrive within 15 minutes.",
    "Version 4.2 shipped on 12 March 2026 with faster CSV imports.",
    "Ask the Billing team or the Customer Success team for a quote.",
    "The On-Call Engineer rotates every Monday at 09:00 UTC.",
    "Webhooks retry 5 times with exponential backoff over 24 hours.",
    "Data is encrypted with AES-256 at rest and TLS 1.3 in transit.",
    "Use the CLI: quill export --format parquet --since 2026-01-01.",
    "Dagster, Airflow and Prefect can trigger a Quillstack export.",
    "The EU region runs in Frankfurt and the US region in Virginia.",
    "Our NPS rose from 41 to 47 after the Q3 release.",
    "Jira, Slack, GitHub and Zendesk integrations are on every paid plan.",
    "An Owner can transfer the workspace; an Admin cannot.",
    "The SLA promises 99.9% uptime, measured monthly.",
    "Microsoft Teams and Zoom links are added to every board meeting card.",
    "Apple Pay and Google Pay work in the mobile app since version 3.",
]


def ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def date_of_birth(fake: Faker, rng: random.Random) -> str:
    day = fake.date_of_birth(minimum_age=18, maximum_age=75)
    return rng.choice([day.isoformat(), day.strftime("%d/%m/%Y"), day.strftime("%m/%d/%Y"), day.strftime("%d %B %Y"),
                       day.strftime("%B %d, %Y"), day.strftime("%d.%m.%Y")])


def person(fake: Faker, locale: str) -> str:
    if locale in ROMANISED:
        return fake.romanized_name()
    return f"{fake.first_name()} {fake.last_name()}"


def card(fake: Faker) -> str:
    number = fake.credit_card_number(card_type=fake.random_element(["visa", "mastercard", "amex", "discover", "jcb"]))
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4)) if fake.boolean() else number


def make(seed: int) -> list[dict]:
    rng = random.Random(seed)
    fakers = {loc: Faker(loc) for loc in sorted(set(LOCALES + ADDRESS_LOCALES))}
    for i, fake in enumerate(fakers.values()):
        fake.seed_instance(seed + i)
    records = []
    for n in range(200):
        locale = LOCALES[n % len(LOCALES)]
        fake = fakers[locale]
        template = TEMPLATES[n % len(TEMPLATES)]
        planted, text = [], template
        while "{" in text:
            start = text.index("{")
            field = text[start + 1 : text.index("}", start)]
            if field == "PERSON":
                entity, value = "PERSON", person(fake, locale)
            elif field == "person_lower":
                entity, value = "PERSON", person(fake, locale).lower()
            elif field == "PERSON_UPPER":
                entity, value = "PERSON", person(fake, locale).upper()
            elif field == "EMAIL_ADDRESS":
                entity, value = field, fake.free_email() if fake.boolean() else fake.company_email()
            elif field == "PHONE_NUMBER":
                entity, value = field, fake.phone_number()
            elif field == "CREDIT_CARD":
                entity, value = field, card(fake)
            elif field == "IBAN_CODE":
                entity, value = field, fake.iban()
            elif field == "IP_ADDRESS":
                entity, value = field, fake.ipv4_public() if rng.random() < 0.8 else fake.ipv6()
            elif field == "US_SSN":
                entity, value = field, ssn(rng)
            elif field == "STREET_ADDRESS":
                entity, value = field, fakers[rng.choice(ADDRESS_LOCALES)].street_address().replace("\n", ", ")
            elif field == "DATE_OF_BIRTH":
                entity, value = field, date_of_birth(fake, rng)
            elif field == "EMPLOYEE_ID":
                entity, value = field, f"EMP-{rng.randint(0, 999_999):06d}"
            else:
                raise ValueError(field)
            text = text[:start] + value + text[text.index("}", start) + 1 :]
            planted.append({"entity": entity, "value": value})
        records.append({"id": f"h{n:03d}", "locale": locale, "text": text, "planted": planted})
    records += [{"id": f"k{n:03d}", "locale": "-", "text": text, "planted": [], "keep": True} for n, text in enumerate(KEEP)]
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261204)
    args = parser.parse_args()
    records = make(args.seed)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    values = sum(len(r["planted"]) for r in records)
    print(f"{OUT}: {len(records)} records, {values} planted values")


if __name__ == "__main__":
    main()
