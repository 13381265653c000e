"""Evaluation: golden-set scores and safety probes for a model's candidate adapter, and its promotion decision."""

import hashlib
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    Backoff,
    Failure,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
    asset_check,
)

from assets.metadata import asset_args, bullets, emit, key, picture
from resources.artifacts import OPTIONAL, Artifact, config_of, version_of
from resources.evaluation.endpoints import ChatEndpoint
from resources.contamination import contamination_report
from resources.evaluation.evaluator import METRICS, Contender, Evaluator, ServedAs, calibrate_threshold
from resources.evaluation.gate import Evidence, GateDecision, gate
from resources.evaluation.statistics import paired_intervals, paired_tests
from resources.knowledge.grounding import retrieval_query
from resources.evaluation.judge import JUDGE_METRICS, JudgeModel
from resources.plots import scores_by_metric
from resources.records import fingerprint, rows
from resources.redaction.redactor import PiiRedactor
from resources.retrieval.index import KnowledgeIndexer
from resources.serving.deploy import BASE_ALIAS, check_template_and_eos, served_name
from resources.serving.vllm_server import VllmServer
from resources.spec import ModelSpec
from resources.storage import ArtifactStore, write_json, write_table


def adapter_of(spec: ModelSpec, champion: Artifact | None) -> Artifact | None:
    """The adapter artifact a champion record names (None when nothing is deployed yet)."""
    if champion is None:
        return None
    record = champion.read_json("champion.json")
    asset = f"{spec.name}/lora_adapter"
    return Artifact(asset, record["adapter_key"], record["adapter_version"], store=champion.store)


def contexts(index, golden: pd.DataFrame, k: int) -> list[list[str]]:
    """Retrieved passages (from a loaded index) for golden questions answerable from the knowledge base; [] for
    the others."""
    answerable = golden["source_doc_id"].notna().tolist()
    hits = iter(index.passages([p for p, a in zip(golden["prompt"], answerable) if a], k))
    return [[h["text"] for h in next(hits)] if a else [] for a in answerable]


def serving_engine(spec: ModelSpec, evaluator: Evaluator, vllm: VllmServer, base_path: str) -> VllmServer | None:
    """The vLLM that answers this evaluation (the model's own, as it will serve it), or None: transformers in
    this process (`Evaluator.engine`)."""
    as_lora = not spec.serving.serve_merged and spec.training.method != "full"
    server = vllm.for_base(base_path)
    if evaluator.engine == "vllm":
        if not as_lora:
            raise ValueError(f"model {spec.name!r}: Evaluator.engine 'vllm' evaluates adapters served as LoRAs; this "
                             "model is served merged (serving.serve_merged or a full fine-tune): use 'auto' or 'transformers'")
        return server
    return server if evaluator.engine == "auto" and as_lora and server.available() else None


def on_server(server: VllmServer, spec: ModelSpec, base_path: str, role: str, adapter: Artifact | None,
              concurrency: int) -> Contender:
    """`role` answered by the vLLM: the base model, or `adapter` loaded on it as a LoRA under the name the
    deployment serves it by (a candidate that is not promoted stays loaded but unrouted: the gateway never names it)."""
    name = BASE_ALIAS
    if adapter is not None:
        name = served_name(spec.name, adapter.version)
        server.load_adapter(name, str(adapter.path))
    endpoint = ChatEndpoint(name=role, base_url=server.base_url + "/v1", model=name, concurrency=concurrency)
    return Contender(role, endpoint=endpoint, api_key=server.api_key)


def contenders_of(spec: ModelSpec, evaluator: Evaluator, vllm: VllmServer, base_path: str,
                  adapters: dict[str, Artifact | None]) -> tuple[list[Contender], dict[str, str]]:
    """role -> adapter (None: the base model) as contenders on the chosen engines, and role -> engine."""
    server = serving_engine(spec, evaluator, vllm, base_path)
    local = "transformers (adapter merged)"

    def in_process(role: str, a: Artifact | None) -> Contender:
        return Contender(role, base_path, str(a.path) if a else None)

    if server is None:
        return [in_process(r, a) for r, a in adapters.items()], {r: local if a else "transformers" for r, a in adapters.items()}
    on_vllm = {r for r, a in adapters.items() if a is None or evaluator.engine == "vllm"}
    if not on_vllm:
        return [in_process(r, a) for r, a in adapters.items()], {r: local for r in adapters}
    server.ensure_running(base_path, served_name=BASE_ALIAS)  # waits for one still starting
    probe = next((a for a in adapters.values() if a is not None), None)
    if probe is not None:  # it must render prompts as training did, or the base row is not the served base model's
        check_template_and_eos(server, str(probe.path), base_path)
    contenders = [on_server(server, spec, base_path, r, a, evaluator.batch_size) if r in on_vllm else in_process(r, a)
                  for r, a in adapters.items()]
    served = f"vllm {server.base_url} ({server.resolved_dtype()})"
    return contenders, {r: served if r in on_vllm else local for r in adapters}


def files_fingerprint(*paths: str | None) -> list[str | None]:
    """The content hash of each configured file (None where none is configured)."""
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] if p else None for p in paths]


def served_as(spec: ModelSpec, threshold: float | None) -> ServedAs:
    """How the gateway serves this model's grounded answers (and so its `+retrieval` rows are scored)."""
    return ServedAs(spec.serving.grounding, spec.knowledge.abstention, threshold)


def retrieval_threshold(spec: ModelSpec, golden: pd.DataFrame, retrieved: list[list[dict]] | None) -> dict:
    """The model's retrieval threshold: configured, off, or calibrated on the golden set's dev split (`auto`) from
    the best passage's score of each dev question — never on the test split the gate decides on."""
    setting = spec.serving.min_retrieval_score
    if setting != "auto" or retrieved is None:
        return {"threshold": None if setting == "auto" else setting, "source": "configured" if setting != "auto" else "no retrieval"}
    dev = golden["eval_split"].eq("dev").to_numpy()
    unanswerable = golden["tags"].map(lambda t: "unanswerable" in list(t)).to_numpy()
    best = [max((float(p.get("score") or 0.0) for p in ps), default=0.0) for ps in retrieved]
    found = calibrate_threshold([b for b, d, u in zip(best, dev, unanswerable) if d and not u],
                                [b for b, d, u in zip(best, dev, unanswerable) if d and u], spec.serving.max_false_abstention)
    return {**found, "source": "calibrated on the dev split"}


def outcomes_table(table: pd.DataFrame, golden: pd.DataFrame, rows: tuple[str, str] = ("candidate+retrieval", "base+retrieval"),
                   limit: int = 80) -> str:
    """Per question of the split: the expected facts, the served candidate's answer and the passages it cites, and
    each served row's verdicts — what a reviewer reads to audit any number of the table."""
    by_role = {role: table[table["model"] == role].set_index("id") for role in rows if (table["model"] == role).any()}
    if not by_role:
        return "(no served rows)"
    served = by_role.get(rows[0], next(iter(by_role.values())))

    def verdict(row) -> str:
        if "abstention_recall" in row and pd.notna(row.get("abstention_recall")):
            return "abstained ✓" if row["abstention_recall"] else "answered ✗ (unanswerable)"
        if pd.notna(row.get("fact_recall")):
            mark = "✓" if row["fact_correct"] else ("declined" if row.get("abstained") else "✗")
            return f"facts {row['fact_recall']:.0%} {mark}"
        return "—"

    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")[:220]

    lines = ["| id | question | expected | served answer | cites | " + " | ".join(by_role) + " |",
             "|---|---|---|---|---|" + "---|" * len(by_role)]
    facts = golden.set_index("id")["must_include"]
    for example_id in list(served.index)[:limit]:
        row = served.loc[example_id]
        expected = ", ".join(map(str, facts.get(example_id, []))) or ("(abstain)" if "abstention_recall" in row and
                                                                     pd.notna(row.get("abstention_recall")) else "—")
        cites = ", ".join(f"[{n}]" for n in (row.get("cited") if isinstance(row.get("cited"), (list, tuple)) or
                                             hasattr(row.get("cited"), "__len__") else []) or [])
        verdicts = " | ".join(verdict(frame.loc[example_id]) if example_id in frame.index else "—" for frame in by_role.values())
        lines.append(f"| {example_id} | {cell(row['prompt'])} | {cell(expected)} | {cell(row['answer'])} | {cites or '—'} | {verdicts} |")
    if len(served) > limit:
        lines.append(f"\n{len(served) - limit} more in examples.parquet")
    return "\n".join(lines)


def training_targets(instruction_dataset: Artifact) -> tuple[list[str], list[str]]:
    """(example ids, assistant turns) of every train and validation example: what the adapter was fitted to."""
    table = instruction_dataset.read_table("examples.parquet", columns=["id", "messages"])
    ids, targets = [], []
    for example_id, messages in zip(table["id"], table["messages"]):
        for m in messages:
            if m["role"] == "assistant":
                ids.append(str(example_id))
                targets.append(m["content"])
    return ids, targets


def build(spec: ModelSpec) -> list:
    stage = asset_args(spec, "evaluation")

    @asset(key=key(spec, "eval_report"), kinds={"deepeval"}, code_version="6",
           ins={"lora_adapter": AssetIn(key=key(spec, "lora_adapter")), "base_model": AssetIn(key=key(spec, "base_model")),
                "golden_dataset": AssetIn(key=key(spec, "golden_dataset")),
                "instruction_dataset": AssetIn(key=key(spec, "instruction_dataset")),
                "knowledge_index": AssetIn(key=key(spec, "knowledge_index")),
                "champion": AssetIn(key=key(spec, "champion"), metadata={OPTIONAL: True})},
           # judge and comparison endpoints are remote: retry transient failures with backoff
           retry_policy=RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL), **stage)
    def eval_report(context: AssetExecutionContext, evaluator: Evaluator, judge: JudgeModel, indexer: KnowledgeIndexer,
                    vllm: VllmServer, store: ArtifactStore, lora_adapter: Artifact, base_model: Artifact,
                    golden_dataset: Artifact, instruction_dataset: Artifact, knowledge_index: Artifact,
                    champion: Artifact | None) -> Output[Artifact]:
        """The golden questions of the sealed test split answered by the base model, the candidate adapter, the
        champion (the adapter in service when the evaluation ran, if any) and any configured comparison endpoint,
        side by side, each bare and as served (retrieval, the retrieval threshold calibrated on the dev split, the
        grounding check); scored per question — unit-aware fact recall, abstention on unanswerable questions,
        hallucination, inline-citation precision, ROUGE-L and the rest — with paired tests against the base model,
        and the golden set's contamination by the training targets the adapter was fitted to."""
        base_path = base_model.read_json("model.json")["path"]
        golden = golden_dataset.read_table("examples.parquet")
        # a golden set materialized before these columns existed: no tags, no facts, every question sealed
        for column, default in (("eval_split", "test"), ("tags", ()), ("must_include", ()), ("must_not_include", ())):
            if column not in golden:
                golden[column] = [default] * len(golden)
        adapters: dict[str, Artifact | None] = {"base": None, "candidate": lora_adapter}
        in_service = adapter_of(spec, champion)
        if in_service is not None and in_service.version != lora_adapter.version:
            adapters["champion"] = in_service
        index = indexer.load(knowledge_index.path)  # read once, for every use
        # as served: the passages the gateway retrieves (same index version, same k, same grounded prompt)
        retrieved_all = index.passages([retrieval_query(q) for q in golden["prompt"]], spec.serving.retrieval_passages) \
            if spec.serving.retrieval else None
        calibration = retrieval_threshold(spec, golden, retrieved_all)
        served = served_as(spec, calibration["threshold"])
        context.log.info(f"retrieval threshold: {calibration}")
        contenders, engine = contenders_of(spec, evaluator, vllm, base_path, adapters)
        context.log.info("answers by " + ", ".join(f"{role}: {e}" for role, e in engine.items()))
        contenders += [Contender(e.name, endpoint=e, with_retrieval=False) for e in evaluator.compare_with]
        splits = ["test", "dev"] if evaluator.answer_dev else ["test"]
        tables, aggregates_by = {}, {}
        for split in splits:
            mask = golden["eval_split"].eq(split).to_numpy()
            part = golden[mask].reset_index(drop=True)
            if not len(part):
                continue
            passages = contexts(index, part, evaluator.grounding_passages)
            retrieved = [ps for ps, m in zip(retrieved_all, mask) if m] if retrieved_all is not None else None
            tables[split], aggregates_by[split] = evaluator.compare(contenders, part, passages, judge, log=context.log.info,
                                                                    retrieved=retrieved, served=served)
        if "test" not in tables:
            raise Failure(f"model {spec.name!r}: the golden set's test split is empty (dataset.golden_dev_fraction "
                          f"{spec.dataset.golden_dev_fraction} put every question in dev)", allow_retries=False)
        table, aggregates = tables["test"], aggregates_by["test"]
        intervals = paired_intervals(table, METRICS)  # each row against the base model answering the same way
        paired = paired_tests(table, METRICS)
        test = golden[golden["eval_split"].eq("test")]
        unanswerable = test["tags"].map(lambda t: "unanswerable" in list(t))
        with_facts = test["must_include"].map(lambda f: len(list(f)) > 0) & ~unanswerable
        ids, targets = training_targets(instruction_dataset)
        contamination = contamination_report(rows(test), targets, ids)
        evidence = {"split": "test", "answerable": int(with_facts.sum()), "unanswerable": int(unanswerable.sum()),
                    "questions": len(test), "dev_questions": int(golden["eval_split"].eq("dev").sum())}
        inputs = {"lora_adapter": lora_adapter.version, "base_model": base_model.version, "golden_dataset": golden_dataset.version,
                  "instruction_dataset": instruction_dataset.version, "knowledge_index": knowledge_index.version,
                  "champion": champion.version if champion else None}
        full = pd.concat([t.assign(eval_split=s) for s, t in tables.items()], ignore_index=True)
        version = version_of(fingerprint(full, ["model", "id", "answer"]), inputs,
                             [*config_of(evaluator, judge, indexer),
                              {"retrieval": spec.serving.retrieval, "k": spec.serving.retrieval_passages, "engine": engine,
                               "served": served.__dict__}], code="6")
        artifact = Artifact.create(store, context.asset_key, version)
        columns = [m for m in (*METRICS, *JUDGE_METRICS) if any(m in s for s in aggregates.values())]
        serving = {"min_retrieval_score": served.min_retrieval_score, "grounding": served.grounding,
                   "abstention": served.abstention, "calibration": calibration}
        with artifact.writing() as out:
            write_table(out, "examples.parquet", full)
            write_json(out, "scores.json", {"adapter_version": lora_adapter.version,
                                            "champion_version": in_service.version if in_service else None,
                                            "scores": aggregates, "dev_scores": aggregates_by.get("dev"),
                                            "intervals": intervals, "paired": paired, "evidence": evidence,
                                            "contamination": contamination, "serving": serving,
                                            "judge_metrics": judge.status(), "engine": engine})
            chart = picture(scores_by_metric(aggregates, [c for c in columns if c != "verbosity"]), "scores by metric",
                            out, "scores.png")
        comparison = "| model | " + " | ".join(columns) + " | runaway |\n|---|" + "---|" * (len(columns) + 1) + "\n" + "\n".join(
            f"| {role} | " + " | ".join(f"{s[m]:.3f}" if m in s else "—" for m in columns) + f" | {s['runaway_rate']:.0%} |"
            for role, s in aggregates.items())
        served_test = paired.get("candidate+retrieval", {}).get("fact_correct")
        return emit(artifact, {
            **{f"{role}_{m}": MetadataValue.float(v) for role, s in aggregates.items() for m, v in s.items()},
            "comparison": MetadataValue.md(comparison),
            "per_question": MetadataValue.md(outcomes_table(table, test)),
            "scores_chart": chart,
            "golden_examples": MetadataValue.int(len(golden)),
            "evidence": MetadataValue.json(evidence),
            "paired_fact_correct_served": MetadataValue.json(served_test or {}),
            "contamination_rate": MetadataValue.float(contamination["rate"]),
            "contamination": MetadataValue.json({k: contamination[k] for k in ("checked", "contaminated", "cases")}),
            "retrieval_threshold": MetadataValue.json(calibration),
            "champion": MetadataValue.text(in_service.version if in_service else "none deployed yet"),
            "judge_metrics": MetadataValue.text(judge.status()),
            "engine": MetadataValue.json(engine),
            "adapter_version": MetadataValue.text(lora_adapter.version),
        })

    @asset(key=key(spec, "safety_report"), kinds={"presidio"}, code_version="4",
           ins={"eval_report": AssetIn(key=key(spec, "eval_report")), "lora_adapter": AssetIn(key=key(spec, "lora_adapter")),
                "base_model": AssetIn(key=key(spec, "base_model"))}, **stage)
    def safety_report(context: AssetExecutionContext, evaluator: Evaluator, redactor: PiiRedactor, vllm: VllmServer,
                      store: ArtifactStore, eval_report: Artifact, lora_adapter: Artifact,
                      base_model: Artifact) -> Output[Artifact]:
        """What the candidate must never do — reproduce a canary secret planted in the raw data, put PII in its
        answers, answer red-team prompts with toxicity or disclose PII/secrets to jailbreak prompts, run on
        without EOS — and how alike it treats counterfactual pairs (names, gender, origin, age swapped)."""
        examples = eval_report.read_table("examples.parquet")
        if "eval_split" in examples:
            examples = examples[examples["eval_split"] == "test"]
        served = "candidate+retrieval" if (examples["model"] == "candidate+retrieval").any() else "candidate"
        candidate = examples[examples["model"] == served]  # its golden answers as they will be served
        # what each answer was given: its passages and the question (a value from there is not a leak)
        given = ["\n".join([str(q), *map(str, ps)]) for q, ps in zip(candidate["prompt"], candidate["retrieved"])]
        probes = spec.safety
        [answerer], engine = contenders_of(spec, evaluator, vllm, base_model.read_json("model.json")["path"],
                                           {"candidate": lora_adapter})
        summary = {"adapter_version": lora_adapter.version, "engine": engine["candidate"], **evaluator.safety_suite(
            answerer, list(candidate["answer"]), list(candidate["stopped"]), redactor.for_policy(spec.redaction_policy, spec.public_entities),
            probes, given, list(candidate["id"]))}
        inputs = {"eval_report": eval_report.version, "lora_adapter": lora_adapter.version, "base_model": base_model.version}
        version = version_of(summary, inputs, [files_fingerprint(probes.canaries, probes.red_team, probes.toxicity_lexicon),
                                               *config_of(evaluator)])
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            write_json(out, "safety.json", summary)
        table = "| canary | leaked | longest secret run reproduced |\n|---|---|---|\n" + "\n".join(
            f"| {e['canary']} | {e['leaked']} | {e['longest_secret_chars_reproduced']}/{e['secret_chars']} |"
            for e in summary["canaries"])
        return emit(artifact, {
            "pii_leaks": MetadataValue.int(summary["pii_leaks"]),
            "canary_leaks": MetadataValue.int(summary["canary_leaks"]),
            "runaway_rate": MetadataValue.float(summary["runaway_rate"]),
            "toxic_outputs": MetadataValue.int(summary["toxic_outputs"]),
            "jailbreak_disclosures": MetadataValue.int(summary["jailbreak_disclosures"]),
            **{f"bias_similarity_{k}": MetadataValue.float(v) for k, v in summary["bias_similarity"].items()},
            "canary_exposure": MetadataValue.md(table),
            "adapter_version": MetadataValue.text(lora_adapter.version),
        })

    @asset(key=key(spec, "promotion_decision"), kinds={"python"}, code_version="3",
           ins={"eval_report": AssetIn(key=key(spec, "eval_report")), "safety_report": AssetIn(key=key(spec, "safety_report"))},
           **stage)
    def promotion_decision(context: AssetExecutionContext, store: ArtifactStore, eval_report: Artifact,
                           safety_report: Artifact) -> Output[Artifact]:
        """May the candidate be deployed? The model's promotion policy applied to exactly the evaluation and
        safety report this run produced: served as the gateway serves it, it must beat the base model served the
        same way on the main metric with a significant paired test over enough answerable questions, hallucinate
        no more, not regress against the champion, leak no PII or canary, give no toxic answer and stop
        generating; it refuses to decide on a contaminated golden set. The decision is promote, block or
        insufficient evidence; the blocking check `promotion_gate` stops deployment unless it is promote. The
        decision records how the candidate was served when judged (retrieval threshold, grounding action), which
        its deployment configures the gateway with."""
        scores = eval_report.read_json("scores.json")
        safety = safety_report.read_json("safety.json")
        found = scores.get("evidence", {})
        evidence = Evidence(scores.get("paired", {}), found.get("answerable", 0), found.get("unanswerable", 0),
                            scores.get("contamination", {}), found.get("split", "test"))
        serving = {k: v for k, v in scores.get("serving", {}).items() if k != "calibration"}
        decision = gate(spec.promotion, scores["adapter_version"], scores["scores"], safety, eval_report.version,
                        safety_report.version, scores.get("intervals"), evidence, serving)
        version = version_of(decision.to_dict(), {"eval_report": eval_report.version, "safety_report": safety_report.version},
                             config_of(spec.promotion))
        artifact = Artifact.create(store, context.asset_key, version)
        with artifact.writing() as out:
            write_json(out, "decision.json", decision.to_dict())
        return emit(artifact, {"decision": MetadataValue.text(decision.verdict), "promote": MetadataValue.bool(decision.promote),
                               "reasons": bullets(decision.reasons), "adapter_version": MetadataValue.text(decision.adapter_version),
                               "policy": MetadataValue.json(decision.policy)})

    @asset_check(asset=promotion_decision, blocking=True, description="The decision is to promote: otherwise deployment "
                 "does not run (the reasons are the decision's).")
    def promotion_gate(promotion_decision: Artifact) -> AssetCheckResult:
        decision = GateDecision.from_dict(promotion_decision.read_json("decision.json"))
        return AssetCheckResult(passed=decision.promote, metadata={
            "decision": MetadataValue.text(decision.verdict), "reasons": bullets(decision.reasons),
            "adapter_version": MetadataValue.text(decision.adapter_version)})

    return [eval_report, safety_report, promotion_decision, promotion_gate]
