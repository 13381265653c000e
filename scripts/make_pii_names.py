"""Write tests/data/pii_names.jsonl: a second labelled set of persons, made after redaction's person rules were
written against the misses of tests/data/pii_heldout.jsonl — so it measures how those rules generalise.

29 Faker locales (11 of them in neither the sample corpus nor the first held-out set: Croatian, Slovene,
Lithuanian, Estonian, Irish, Filipino, Ukrainian, Finnish, Czech, Hungarian, Romanian, ...; Hindi names in
Devanagari), new sentence templates (forwarded mails, rotas, minutes, cc lines, sign-offs), one or two names a
record. Only persons are planted.

    .venv/bin/python scripts/make_pii_names.py [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from faker import Faker

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "pii_names.jsonl"
LOCALES = ["en_US", "es_MX", "fr_FR", "de_AT", "it_IT", "pt_BR", "pl_PL", "nl_BE", "tr_TR", "hi_IN", "sv_SE", "da_DK",
           "fi_FI", "cs_CZ", "hu_HU", "ro_RO", "id_ID", "en_NZ", "fil_PH", "sk_SK", "hr_HR", "sl_SI", "lt_LT", "et_EE",
           "ga_IE", "en_PH", "es_CO", "fr_CA", "uk_UA"]
TEMPLATES = ["Forwarding this from {n} who could not log in yesterday.", "{n} will cover the on-call rota next week.",
             "The invoice was approved by {n} on Friday.", "Could you add {n} to the admins of our workspace?",
             "Our account manager, {n}, suggested the Business plan.",
             "Minutes: {n} presented the roadmap; questions went to {m}.", "Best wishes, {n}",
             "cc {n} and {m} on this thread please", "Reported by {n} (customer since 2019).",
             "I spoke with {n} earlier and {m} confirmed the refund."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng, rows = random.Random(args.seed), []
    for i in range(150):
        locale = LOCALES[i % len(LOCALES)]
        fake = Faker(locale)
        fake.seed_instance(1000 + i)
        first, second = fake.name(), fake.name()
        template = rng.choice(TEMPLATES)
        names = [first] + ([second] if "{m}" in template else [])
        rows.append({"id": f"n{i:03d}", "locale": locale, "text": template.format(n=first, m=second),
                     "planted": [{"entity": "PERSON", "value": n} for n in names]})
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} records, {sum(len(r['planted']) for r in rows)} names -> {OUT}")


if __name__ == "__main__":
    main()
