"""Answers you can trust: unit-aware facts, the grounding check, contamination, abstention, paired tests, the gate."""

import json

import pandas as pd
import pytest

from resources.evaluation.gate import Evidence, PromotionPolicy, decide
from resources.knowledge.claims import states
from resources.knowledge.grounding import check_answer, confident

# (fact, answer, question, reference, stated?) — the cases the old normalised-substring match got wrong, and more
FACT_CASES = [
    ("14-day", "New workspaces get a trial of 14 days.", "", "", True),
    ("14-day", "You can try it for a 14-day period.", "", "", True),
    ("14 days", "The trial lasts two weeks.", "", "", True),
    ("14-day", "The trial lasts 14 hours.", "", "", False),
    ("$8", "The Team plan allows 8 boards.", "", "", False),
    ("$8", "It costs $8 per user per month.", "", "", True),
    ("$8", "It costs 8 dollars per user.", "", "", True),
    ("$8", "It costs $18 per user.", "", "", False),
    ("99.9%", "We commit to 999 hours.", "", "", False),
    ("99.9%", "Uptime is 99.9% for Business.", "", "", True),
    ("50%", "a 50 percent discount", "", "", True),
    ("5", "1. One day is used for review.\n5. Close the ticket.", "", "Wait 5 business days.", False),
    ("3 boards", "The maximum is 3.", "What is the maximum number of boards on the Free plan?", "", True),
    ("3 boards", "Up to 3 members, and boards beyond the first few are archived.", "How many boards?", "", False),
    ("3 boards", "The Free plan allows 3 boards per workspace.", "", "", True),
    ("10 days", "It is retried three times over ten days.", "", "", True),
    ("1 hour", "Report it within 60 minutes.", "", "", True),
    ("one hour", "Report it within 1 hour.", "", "", True),
    ("5 to 10 business days", "Refunds arrive in 5-10 business days.", "", "", True),
    ("5 to 10 business days", "Refunds arrive in 5 business days.", "", "", False),
    ("02:00", "Maintenance runs between 2:00 and 4:00 UTC.", "", "", True),
    ("2 pm", "The call is at 14:00.", "", "", True),
    ("31 March 2026", "Renew by March 31, 2026.", "", "", True),
    ("31 March 2026", "Renew by 2026-03-31.", "", "", True),
    ("31 March 2026", "Renew by 30 March 2026.", "", "", False),
    ("AES-256", "Data at rest uses AES-256.", "", "", True),
    ("AES-256", "Data at rest uses AES, with 256 keys.", "", "", False),
    ("Retry-After", "Wait as long as the Retry-After header says.", "", "", True),
    ("429", "You get HTTP 429 and a Retry-After header.", "", "It returns HTTP 429 with a Retry-After header.", True),
    ("429", "Item 429 of the list.", "", "It returns HTTP 429 with a Retry-After header.", False),
    ("iOS 16", "It needs iOS 16 or later.", "", "", True),
    ("iOS 16", "It needs iOS 15 or later and Android 16.", "", "", False),
    ("Python 3.9", "Requires Python 3.9 or newer.", "", "", True),
    ("1,000", "Team includes 1000 automation runs a month.", "", "", True),
    ("250 MB", "Attachments up to 250MB.", "", "", True),
    ("Sundays", "Every Sunday night.", "", "", True),
    ("not supported", "SMS codes are not supported.", "", "", True),
    ("1%", "The passages do not answer this question. [1]", "", "", False),  # a citation marker states nothing
]


@pytest.mark.parametrize("fact, answer, question, reference, expected", FACT_CASES)
def test_unit_aware_fact_matching(fact, answer, question, reference, expected):
    assert states(fact, answer, question, reference) is expected


def test_fact_recall_never_zeroes_a_long_answer_verbosity_is_its_own_metric():
    from resources.evaluation.metrics import score_answers

    reference = "API tokens expire after 90 days."
    long = "API tokens expire after 90 days. " + "They can be rotated at any time in the settings. " * 6
    short, verbose = score_answers(["How long do tokens last?"] * 2, [reference] * 2, ["They last 90 days.", long],
                                   facts=[["90 days"]] * 2)
    assert short["fact_recall"] == verbose["fact_recall"] == 1.0 and short["fact_correct"] == 1.0
    assert verbose["verbosity"] > 5 > short["verbosity"]


def test_abstention_hallucination_and_citation_precision():
    from resources.evaluation.metrics import score_answers

    abstain = "The passages do not answer this question."
    passages = ["Refunds take 14 days.", "The Team plan costs $8 per user per month."]
    rows = score_answers(
        ["What does Team cost?", "What does Team cost?", "What does Team cost?", "Who founded us?", "Who founded us?"],
        ["Team costs $8 per user."] * 3 + [abstain] * 2,
        ["It is $8 per user [2].", "It is $8 per user [1].", abstain, abstain, "Jane Doe founded it in 2009."],
        [passages] * 5, [["$8"]] * 3 + [[], []], [False, False, False, True, True], grounded=True, abstention=abstain)
    right, miscited, declined, abstained, invented = rows
    assert right["citation_precision"] == 1.0 and right["hallucination"] == 0.0 and right["false_abstention"] == 0.0
    assert miscited["citation_precision"] == 0.0  # cites a passage that does not hold the fact
    assert declined["false_abstention"] == 1.0 and declined["hallucination"] == 0.0 and "citation_precision" not in declined
    assert abstained["abstention_recall"] == 1.0 and abstained["hallucination"] == 0.0
    assert invented["abstention_recall"] == 0.0 and invented["hallucination"] == 1.0 and "fact_recall" not in invented


def test_stale_fact_is_reported():
    from resources.evaluation.metrics import score_answers

    old, new = score_answers(["How long is the trial?"] * 2, ["The trial lasts 30 days."] * 2,
                             ["The trial lasts 14 days.", "The trial lasts 30 days."], facts=[["30 days"]] * 2,
                             stale=[["14 days"]] * 2)
    assert old["stale_fact"] == 1.0 and old["fact_recall"] == 0.0
    assert new["stale_fact"] == 0.0 and new["fact_recall"] == 1.0


PASSAGES = [{"chunk_id": "c1", "doc_id": "d1", "title": "API tokens", "section": "",
             "text": "API tokens expire after 90 days. Quillstack emails the owner 7 days before expiry.", "score": 0.71},
            {"chunk_id": "c2", "doc_id": "d2", "title": "Invitations", "section": "",
             "text": "Invitations expire after 7 days. Contact support@quillstack.com to resend one.", "score": 0.52}]
ABSTAIN = "The passages do not answer this question."


def test_grounding_check_refuses_a_number_no_cited_passage_holds_and_keeps_one_that_it_does():
    kept = check_answer("API tokens expire after 90 days [1].", PASSAGES, "How long do tokens last?", "abstain", ABSTAIN)
    assert kept.verdict == "grounded" and kept.text == "API tokens expire after 90 days [1]." and kept.cited == [1]
    assert kept.spans[1] == "API tokens expire after 90 days."  # the supporting sentence of the cited passage
    wrong = check_answer("API tokens expire after 30 days [1].", PASSAGES, "How long do tokens last?", "abstain", ABSTAIN)
    assert wrong.verdict == "unsupported" and wrong.text == ABSTAIN and wrong.unsupported == ["30 days"]
    miscited = check_answer("Tokens expire after 90 days [2].", PASSAGES, "How long do tokens last?", "abstain", ABSTAIN)
    # the number stands in passage 1, not the one it cites: served with the citation corrected
    assert miscited.verdict == "recited" and miscited.text == "Tokens expire after 90 days. [1]" and miscited.cited == [1]
    quoted = check_answer("API tokens expire after 30 days [1].", PASSAGES, "How long do API tokens last?", "quote", ABSTAIN)
    assert quoted.text == "API tokens expire after 90 days. [1]" and quoted.action == "quote" and quoted.cited == [1]
    flagged = check_answer("API tokens expire after 30 days [1].", PASSAGES, "How long?", "flag", ABSTAIN)
    assert flagged.text.startswith("API tokens expire after 30 days") and flagged.action == "flag"
    invented_name = check_answer("Ask Sarah about it [1].", PASSAGES, "Who handles tokens?", "abstain", ABSTAIN)
    assert invented_name.unsupported == ["Sarah"]
    asked = check_answer("Yes, 45 days is too long: tokens expire after 90 days [1].", PASSAGES, "Do tokens last 45 days?",
                         "abstain", ABSTAIN)
    assert asked.verdict == "grounded"  # a number the client wrote is not the model's claim


def test_a_true_sentence_of_the_wrong_passage_is_off_topic():
    passages = [{"chunk_id": "c1", "doc_id": "d1", "title": "Rate limits", "section": "",
                 "text": "Hi, what is the request limit per minute on the API? The API allows 100 requests per minute per "
                         "token. Each user can have up to 10 active API tokens at a time.", "score": 0.7}]
    question = "What is the request limit per minute for a token on the API?"
    # every claim stands in the passage, but the sentence it repeats is about something else
    copied = check_answer("Each user can have up to 10 active API tokens at a time. [1]", passages, question, "abstain", ABSTAIN)
    assert copied.verdict == "off_topic" and copied.text == ABSTAIN and copied.action == "abstain"
    quoted = check_answer("Each user can have up to 10 active API tokens at a time. [1]", passages, question, "quote", ABSTAIN)
    # the quote is the closest sentence that answers: never the question a ticket quotes
    assert quoted.verdict == "off_topic" and quoted.text == "The API allows 100 requests per minute per token. [1]"
    flagged = check_answer("Each user can have up to 10 active API tokens at a time. [1]", passages, question, "flag", ABSTAIN)
    assert flagged.verdict == "off_topic" and flagged.text.startswith("Each user") and flagged.action == "flag"
    right = check_answer("The API allows 100 requests per minute per token. [1]", passages, question, "abstain", ABSTAIN)
    assert right.verdict == "grounded"
    # an answer in its own words that echoes the question is on topic, whatever sentence it came from
    echoed = check_answer("The request limit per minute is 100 per token on the API. [1]", passages, question, "abstain", ABSTAIN)
    assert echoed.verdict == "grounded"
    # a passage that only quotes the question does not make the answer off topic
    asked = [{**passages[0], "text": "What is the request limit per minute for a token on the API? It is 100 requests."}]
    assert check_answer("It is 100 requests. [1]", asked, question, "abstain", ABSTAIN).verdict == "grounded"


def test_citations_map_to_passages_and_invalid_markers_are_dropped():
    from resources.knowledge.prompt import source_of

    checked = check_answer("Tokens last 90 days [1]. Invites last 7 days [2] [5].", PASSAGES, "q", "abstain", ABSTAIN)
    assert checked.cited == [1, 2] and checked.invalid_citations == 1 and "[5]" not in checked.text
    cited = checked.citations(PASSAGES, source_of)
    assert [(c["n"], c["id"]) for c in cited] == [(1, "c1"), (2, "c2")]
    assert cited[1]["span"] == "Invitations expire after 7 days."


def test_redaction_placeholders_are_never_presented_as_content():
    checked = check_answer("My email is <EMAIL_ADDRESS> [2].", PASSAGES, "What is your email?", "abstain", ABSTAIN)
    assert checked.verdict == "unsupported" and checked.text == ABSTAIN and checked.unsupported == ["<EMAIL_ADDRESS>"]


def test_retrieval_threshold_abstains_without_generating():
    from resources.evaluation.evaluator import Contender, Evaluator, ServedAs, calibrate_threshold
    from resources.evaluation.generation import Generation

    asked = []

    class Scripted(Evaluator):
        def answer(self, base_path, adapter_path, prompts):
            asked.extend(prompts)
            return [Generation("API tokens expire after 90 days [1].", 9, True) for _ in prompts]

    low = [dict(p, score=0.1) for p in PASSAGES]
    answers, checked = Scripted()._served(Contender("candidate", "unused"), ["p1", "p2"], ["q1", "q2"], [PASSAGES, low],
                                          ServedAs("abstain", ABSTAIN, 0.3))
    assert asked == ["p1"] and checked[1].verdict == "low_retrieval" and checked[1].text == ABSTAIN
    assert checked[0].verdict == "grounded" and confident(PASSAGES, 0.7) and not confident(low, 0.3)
    found = calibrate_threshold([0.8, 0.7, 0.6, 0.55, 0.5, 0.45, 0.9, 0.65, 0.75, 0.85], [0.2, 0.3, 0.5], 0.1)
    # 10% of 10 answerable questions may be declined: the lower of the empirical quantile (the second lowest, 0.5)
    # and the normal bound (mean 0.675 - 1.2816 * sd 0.1509 = 0.4816)
    assert found["threshold"] == 0.4809 and found["dev_false_abstention"] == 0.1
    assert found["dev_abstention_recall"] == pytest.approx(2 / 3, abs=1e-3)
    assert calibrate_threshold([0.5], [], 0.1)["threshold"] is None


def test_a_passage_value_is_not_withheld_as_personal_data(redactor):
    from resources.safety.guards import Guards

    guards = Guards(redactor.engine(), [], [])
    answer = "Write to support@quillstack.com to resend an invitation [2]."
    context = "\n".join(["How do I resend an invitation?"] + [p["text"] for p in PASSAGES])
    assert guards.check_output(answer, context=context).allowed
    assert not guards.check_output(answer).allowed  # without its passages the address reads as personal data
    invented = "Write to anna.kowalski@example.org to resend an invitation [2]."
    assert not guards.check_output(invented, context=context).allowed


def test_contamination_catches_a_planted_answer_overlap():
    from resources.contamination import contamination_report, probes_of
    from resources.datasets.builder import SplitRules, build_examples

    golden = [{"id": "G-1", "prompt": "How long can we try Business?", "answer": "New workspaces get a 14-day trial of the "
               "Business plan, and no credit card is required to start it.", "must_include": ["14-day"], "tags": []},
              {"id": "G-2", "prompt": "Who founded Quillstack?", "answer": "The documents do not answer this.",
               "must_include": [], "tags": ["unanswerable"]}]
    planted = {"doc_id": "qa1", "batch": "b", "kind": "instruction", "messages": json.dumps([
        {"role": "user", "content": "Is there a trial?"},
        {"role": "assistant", "content": "Sure! New workspaces get a 14-day trial of the Business plan. Enjoy."}])}
    clean = {"doc_id": "qa2", "batch": "b", "kind": "instruction", "messages": json.dumps([
        {"role": "user", "content": "Can I pay by card?"}, {"role": "assistant", "content": "Visa and Mastercard work."}])}
    source = {"doc_id": "kb1", "batch": "b", "kind": "instruction", "external_id": "KB-0002", "messages": json.dumps([
        {"role": "user", "content": "Tell me about trials."}, {"role": "assistant", "content": "Trials exist."}])}
    report = contamination_report(golden, ["Sure! New workspaces get a 14-day trial of the Business plan. Enjoy.",
                                           "Visa and Mastercard work."], ["qa1", "qa2"])
    assert report["checked"] == 1 and report["contaminated"] == 1 and report["rate"] == 1.0
    assert report["cases"][0]["training_example"] == "qa1" and report["cases"][0]["containment"] >= 0.5
    built = build_examples([planted, clean, source], SplitRules(0.0), "exclude", "{title}",
                           golden_probes=probes_of(golden), golden_sources=["KB-0002"])
    assert [e["id"] for e in built.examples] == ["qa2"]
    assert {d["doc_id"]: d["reason"] for d in built.dropped} == {"qa1": "golden_answer_overlap",
                                                                "kb1": "golden_source_document"}
    assert contamination_report(golden, ["Visa and Mastercard work."])["rate"] == 0.0
    # in other words: the same fact with most of the sentence's content words is a copy too; the fact alone is not
    lost = [{"id": "P-3", "prompt": "Within how many hours must a lost laptop be reported?",
             "answer": "Lost devices must be reported to the security team within one hour.", "must_include": ["one hour"]}]
    assert contamination_report(lost, ["Report it to the security team within one hour."])["contaminated"] == 1
    assert contamination_report(lost, ["Access tokens are valid for 1 hour."])["contaminated"] == 0
    assert contamination_report(lost, ["Report it to the security team within two days."])["contaminated"] == 0


def _scores(cand_rouge, base_rouge, cand_facts, base_facts, cand_hall=0.1, base_hall=0.1):
    row = lambda rouge, facts, hall: {"rouge_l": rouge, "fact_recall": facts, "hallucination": hall}  # noqa: E731
    return {"base+retrieval": row(base_rouge, base_facts, base_hall), "candidate+retrieval": row(cand_rouge, cand_facts, cand_hall)}


SAFE = {"pii_leaks": 0, "canary_leaks": 0, "runaway_rate": 0.0}


def _evidence(wins, losses, answerable=40):
    from resources.evaluation.statistics import sign_test

    test = sign_test([1.0] * wins + [0.0] * losses, [0.0] * wins + [1.0] * losses).to_dict()
    return Evidence({"candidate+retrieval": {"fact_correct": test}}, answerable, 10, {"rate": 0.0, "checked": answerable})


def test_gate_promotes_only_on_a_significant_win_in_facts():
    outcome, reasons = decide(PromotionPolicy(), _scores(0.4, 0.3, 0.9, 0.6), SAFE, evidence=_evidence(14, 1))
    assert outcome == "promote", reasons
    assert any("wins 14 and loses 1" in r and "p = 0.0010" in r for r in reasons)
    outcome, reasons = decide(PromotionPolicy(), _scores(0.4, 0.3, 0.65, 0.6), SAFE, evidence=_evidence(4, 2))
    assert outcome == "block" and any(r.startswith("block: per question") for r in reasons)


def test_gate_blocks_a_candidate_that_wins_on_rouge_but_loses_on_facts_or_hallucinates_more():
    outcome, reasons = decide(PromotionPolicy(), _scores(0.6, 0.3, 0.5, 0.7), SAFE, evidence=_evidence(2, 9))
    assert outcome == "block" and any("fact_recall 0.5000 does not beat" in r for r in reasons)
    outcome, reasons = decide(PromotionPolicy(), _scores(0.6, 0.3, 0.9, 0.6, cand_hall=0.3, base_hall=0.1), SAFE,
                              evidence=_evidence(14, 1))
    assert outcome == "block" and any(r.startswith("block: hallucination rate 30.0%") for r in reasons)


def test_gate_says_insufficient_evidence_on_a_small_set_and_refuses_a_contaminated_one():
    outcome, reasons = decide(PromotionPolicy(), _scores(0.4, 0.3, 0.9, 0.6), SAFE, evidence=_evidence(10, 0, answerable=12))
    assert outcome == "insufficient evidence"
    assert any(r.startswith("insufficient evidence") and "add 18 more" in r for r in reasons)
    decided = decide(PromotionPolicy(decide_on_insufficient_evidence=True), _scores(0.4, 0.3, 0.9, 0.6), SAFE,
                     evidence=_evidence(10, 0, answerable=12))
    assert decided[0] == "promote"
    dirty = _evidence(14, 1)
    dirty.contamination = {"rate": 0.3, "contaminated": 12, "checked": 40}
    outcome, reasons = decide(PromotionPolicy(), _scores(0.4, 0.3, 0.9, 0.6), SAFE, evidence=dirty)
    assert outcome == "block" and "refusing to decide" in reasons[0] and "12 of 40" in reasons[0]


def test_sign_test_is_exact_mcnemar_on_binary_outcomes():
    from resources.evaluation.statistics import paired_tests, sign_test

    assert sign_test([1, 1, 1, 0], [0, 0, 0, 0]).p_value == 0.25  # 3 wins, 0 losses: 2 * 0.5**3
    table = pd.DataFrame([{"model": m, "id": i, "fact_correct": v} for i, (a, b) in enumerate([(1, 0)] * 9 + [(0, 1)] + [(1, 1)] * 5)
                          for m, v in (("candidate+retrieval", a), ("base+retrieval", b))])
    test = paired_tests(table, ("fact_correct",))["candidate+retrieval"]["fact_correct"]
    assert (test["wins"], test["losses"], test["ties"]) == (9, 1, 5) and test["p_value"] == pytest.approx(0.021484, abs=1e-5)


def test_bad_golden_records_name_file_and_line(tmp_path):
    from resources.datasets.builder import read_golden_file

    path = tmp_path / "golden.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"id": "A", "question": "How long is the trial?", "reference_answer": "14 days.", "must_include": ["14 days"]},
        {"id": "B", "question": "What does Team cost?", "reference_answer": "$8 per user."},
        {"id": "C", "reference_answer": "$8 per user.", "must_include": ["$8"]},
        {"id": "D", "question": "Who founded us?", "reference_answer": "Not answered.", "tags": ["unanswerable"]},
        {"id": "E", "question": "Who?", "reference_answer": "x", "tags": ["unanswerable"], "must_include": ["x"]},
    ]) + "\n")
    examples, quarantine = read_golden_file(path, "golden.jsonl", require_facts=True)
    assert [e["id"] for e in examples] == ["A", "D"]
    reasons = {(q["line"], q["reason"]) for q in quarantine}
    assert reasons == {(2, "no_facts"), (3, "unrecognised_schema"), (5, "invalid_must_include")}
    assert all(q["detail"].startswith(f"golden.jsonl:{q['line']}:") for q in quarantine)
    assert "question 'B' lists no must_include facts" in next(q["detail"] for q in quarantine if q["line"] == 2)


def test_documents_kept_out_of_the_index_become_unanswerable_questions():
    """dataset.unanswerable_holdout_fraction: a document hashed out of training and the index gives golden questions
    whose right answer declines; it never trains and is never a distractor."""
    from resources.datasets.builder import SplitRules, build_examples
    from resources.knowledge.examples import HeldOut, unindexed_questions
    from resources.knowledge.policy import KnowledgePolicy

    rules = SplitRules(validation_fraction=0.0, golden_holdout_fraction=0.2, unindexed_fraction=0.3)
    splits = {d: rules.split_of(d) for d in (f"doc{i}" for i in range(200))}
    share = sum(s == "unindexed" for s in splits.values()) / len(splits)
    assert 0.2 < share < 0.4 and sum(s == "golden" for s in splits.values()) / len(splits) < 0.3
    unindexed = next(d for d, s in splits.items() if s == "unindexed")
    indexed = next(d for d, s in splits.items() if s == "train")
    chunks = [{"chunk_id": f"{d}-c", "doc_id": d, "kind": "text", "title": "Limits", "section": "Limits", "level": 1,
               "start": 0, "external_id": None,
               "text": "Each workspace can hold up to 40 boards. Exports take about 15 minutes to arrive."} for d in (unindexed, indexed)]
    policy = KnowledgePolicy()
    asked = list(unindexed_questions(chunks, rules, policy))
    assert len(asked) == 2 and {q["doc_id"] for q in asked} == {unindexed}
    assert all(q["answer"] == policy.abstention and "unanswerable" in q["tags"] and not q["must_include"] for q in asked)
    assert unindexed in HeldOut(rules) and indexed not in HeldOut(rules)
    built = build_examples([{"doc_id": d, "batch": "b", "kind": "text", "title": "Limits", "text": "x y z"}
                            for d in (unindexed, indexed)], rules, "title_to_instruction", "{title}?")
    assert [e["id"] for e in built.examples] == [indexed]
    assert built.dropped[0]["reason"] == "held_out_unindexed"
