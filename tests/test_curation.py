"""Curation: normalisation, quality heuristics, language filter, exact and near de-duplication."""

import json

from resources.curation.cleaning import QualityRules, clean_text, quality_issue
from resources.curation.curator import TextCurator

GOOD = "Exports are emailed to the workspace owner as a ZIP archive within fifteen minutes of the request."


def doc(doc_id, text=None, messages=None):
    return {
        "doc_id": doc_id,
        "kind": "chat" if messages else "text",
        "text": text if text is not None else "\n\n".join(m["content"] for m in messages),
        "messages": json.dumps(messages) if messages else None,
    }


def test_clean_text_repairs_mojibake_controls_boilerplate_and_whitespace():
    dirty = "CafÃ© tokens\x07  expire\u200b   soon.\nSent from my iPhone\nCONFIDENTIAL: this message is private\n\n\n\nBye"
    assert clean_text(dirty) == "Café tokens expire soon.\n\nBye"


def test_quality_heuristics_name_their_reason():
    rules = QualityRules()
    assert quality_issue(GOOD, rules) is None
    assert quality_issue("ok thanks", rules)[0] == "too_short"
    assert quality_issue("$$$ ### @@@ " * 5 + "buy now cheap", rules)[0] == "symbol_ratio"
    assert quality_issue("\n".join(["Click here to win a prize today"] * 10), rules)[0] == "repeated_lines"
    # a README's support table repeats its markup cells (bitsandbytes' has 39 "<td>✅</td>"): not junk
    table = "\n".join(["<tr>", "<td>✅</td>", "<td>✅</td>", "<td></td>", "</tr>"] * 12)
    readme = ("The library runs on CPUs and several accelerators, as the table below shows for each backend.\n"
              + table + "\nInstall it with pip and import it in your training script as usual.")
    assert quality_issue(readme, rules) is None
    assert quality_issue("Xqzvbrtplkmnwhgfdsazxcvb qwrtypsdfghjklzxcvbnmqw zxcvbnmlkjhgfdsaqwertyp", rules)[0] == "mean_word_length"
    german = "Ihr Export wird innerhalb von fünfzehn Minuten als ZIP-Archiv an den Eigentümer des Arbeitsbereichs gesendet."
    reason, detail = quality_issue(german, rules)
    assert reason == "language" and "de" in detail
    assert quality_issue(german, QualityRules(languages=())) is None


def test_curate_drops_exact_and_near_duplicates_keeping_the_first():
    near = GOOD.replace("fifteen", "15")
    docs = [doc("a", GOOD), doc("b", GOOD.upper() + "!"), doc("c", near), doc("d", "Something entirely different about SSO login settings.")]
    result = TextCurator().curate(docs)
    assert [d["doc_id"] for d in result.kept] == ["a", "d"]
    reasons = {d["doc_id"]: (d["reason"], d["detail"]) for d in result.dropped}
    assert reasons["b"][0] == "exact_duplicate" and "a" in reasons["b"][1]
    assert reasons["c"][0] == "near_duplicate" and "a" in reasons["c"][1]
    assert result.ledger.balanced() and result.ledger.records_in == 4


def test_curate_deduplicates_against_batches_kept_before():
    curator = TextCurator()
    first = curator.curate([doc("a", GOOD)])
    stored = [{k: first.kept[0][k] for k in ("doc_id", "dedup_key", "minhash")}]
    stored[0]["minhash"] = list(stored[0]["minhash"])  # as read back from parquet
    second = curator.curate([doc("x", GOOD.replace("archive", "file")), doc("y", "A new fact about webhooks and retries.")], stored)
    assert [d["doc_id"] for d in second.kept] == ["y"]
    assert second.dropped[0]["reason"] == "near_duplicate" and "a" in second.dropped[0]["detail"]


def test_chat_messages_are_cleaned_per_message():
    messages = [{"role": "user", "content": "How do I export  my boards?\x00"}, {"role": "assistant", "content": GOOD + "\nSent from my iPhone"}]
    result = TextCurator().curate([doc("c", messages=messages)])
    cleaned = json.loads(result.kept[0]["messages"])
    assert cleaned[0]["content"] == "How do I export my boards?"
    assert cleaned[1]["content"] == GOOD
    assert result.kept[0]["text"] == cleaned[0]["content"] + "\n\n" + cleaned[1]["content"]


def test_boilerplate_only_message_is_dropped_with_reason():
    messages = [{"role": "user", "content": "Sent from my iPhone"}, {"role": "assistant", "content": GOOD}]
    result = TextCurator().curate([doc("c", messages=messages)])
    assert result.dropped[0]["reason"] == "empty_after_cleaning"


def test_curator_config_is_validated_in_one_place():
    import pytest

    with pytest.raises(ValueError, match="min_words"):
        TextCurator(min_words=10, max_words=5)
    with pytest.raises(ValueError, match="near_duplicate_threshold"):
        TextCurator(near_duplicate_threshold=1.5)


def test_batches_are_deduplicated_against_each_other_in_the_order_they_arrived():
    """The corpus's cross-batch de-duplication depends only on the batches and their arrival order, never on when
    each was cleaned: the later copy goes, naming the kept one; the other order keeps the other copy."""
    curator = TextCurator()
    text = "Exports arrive as a ZIP file within fifteen minutes of the request."

    def batch(prefix, texts):
        signed = curator.signatures(texts)
        return [{"doc_id": f"{prefix}{i}", "text": t, "dedup_key": k, "minhash": m} for i, (t, (k, m)) in enumerate(zip(texts, signed))]

    first = batch("a", [text, "Audit logs are kept for one year on the Business plan."])
    second = batch("b", [text.replace("ZIP file", "zip file!"), "Webhooks are retried eight times over a day."])
    forward = curator.deduplicate([("first", first), ("second", second)])
    assert [d["doc_id"] for d in forward.kept] == ["a0", "a1", "b1"]
    [dropped] = forward.dropped
    assert dropped["doc_id"] == "b0" and dropped["reason"] in {"exact_duplicate", "near_duplicate"} and "a0" in dropped["detail"]
    backward = curator.deduplicate([("second", second), ("first", first)])
    assert [d["doc_id"] for d in backward.dropped] == ["a0"]
    assert forward.ledger.balanced() and forward.ledger.records_in == 4
    assert curator.deduplicate([("first", first), ("second", second)]).kept == forward.kept  # the same again


def test_a_long_document_is_kept_whole_for_the_chunker_not_dropped_for_its_length():
    """A 194 kB manual (over 26,000 words) is a document like any other: kept by default, to be cut into passages;
    an explicit `max_words` still drops what is longer, naming the count."""
    subjects = ["The export", "Each webhook", "A workspace", "The audit log", "Every invoice", "The API token"]
    verbs = ["finishes within", "is retried after", "is kept for", "is checked every", "expires after", "is sent within"]
    lines = [f"{subjects[i % 6]} of section {i} {verbs[(i // 6) % 6]} {i % 97 + 2} minutes when the owner asks for it."
             for i in range(1800)]
    text = "\n".join(lines)
    assert len(text.split()) > 26_000
    kept = TextCurator().curate([doc("manual", text=text)])
    assert [d["doc_id"] for d in kept.kept] == ["manual"] and kept.dropped == []
    capped = TextCurator(max_words=20_000).curate([doc("manual", text=text)])
    [dropped] = capped.dropped
    assert dropped["reason"] == "too_long" and "words > max_words=20000" in dropped["detail"]
