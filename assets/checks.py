"""Asset-check factories shared by the stages: great-expectations suites and the record ledger."""


from typing import Callable

from dagster import AssetCheckResult, AssetCheckSeverity, AssetsDefinition, MetadataValue, asset_check

from resources.quality import validate
from resources.records import Ledger
from resources.storage import ArtifactStore


def suite_check(
    asset: AssetsDefinition,
    expectations: Callable[[], list],
    table: str,
    description: str,
    partitioned: bool = True,
):
    """A blocking check that runs a great-expectations suite over the table the asset stored."""
    name = asset.key.path[-1]

    @asset_check(
        asset=asset,
        name=f"{name}_expectations",
        description=description,
        blocking=True,
        partitions_def=asset.partitions_def if partitioned else None,
    )
    def _check(context, store: ArtifactStore) -> AssetCheckResult:
        part = context.partition_key if partitioned else store.latest(name)
        outcome = validate(store.read_table(name, part, table), f"{name}_suite", expectations())
        return AssetCheckResult(
            passed=outcome.success,
            metadata={
                "rows": MetadataValue.int(outcome.rows),
                "expectations": MetadataValue.int(outcome.evaluated),
                "failures": MetadataValue.md("\n".join(f"- {f}" for f in outcome.failures) or "none"),
            },
        )

    return _check


def non_empty_check(asset: AssetsDefinition, table: str = "documents.parquet"):
    """Warns (does not block) when a partition keeps no records: a batch that was all junk or all
    quarantined is worth a look, but its emptiness is not an error downstream."""
    name = asset.key.path[-1]

    @asset_check(
        asset=asset,
        name=f"{name}_not_empty",
        description="Warns when this partition kept no records at all.",
        partitions_def=asset.partitions_def,
    )
    def _check(context, store: ArtifactStore) -> AssetCheckResult:
        part = context.partition_key if asset.partitions_def is not None else store.latest(name)
        count = len(store.read_table(name, part, table))
        return AssetCheckResult(
            passed=count > 0, severity=AssetCheckSeverity.WARN, metadata={"rows": MetadataValue.int(count)}
        )

    return _check


def ledger_check(asset: AssetsDefinition, upstream: str | None, upstream_rows: Callable | None = None):
    """A blocking check: records in = kept + dropped(reason) + quarantined, and the stored tables agree.

    `upstream` names the partitioned asset whose stored row count must equal records_in; for an
    unpartitioned asset, `upstream_rows(context, store)` computes it instead.
    """
    name = asset.key.path[-1]
    partitioned = asset.partitions_def is not None

    @asset_check(
        asset=asset,
        name=f"{name}_ledger",
        description="Every record that came in is kept, dropped with a reason, or quarantined: nothing is lost.",
        blocking=True,
        partitions_def=asset.partitions_def,
    )
    def _check(context, store: ArtifactStore) -> AssetCheckResult:
        part = context.partition_key if partitioned else store.latest(name)
        ledger = Ledger.from_dict(store.read_json(name, part, "ledger.json"))
        problems = []
        if not ledger.balanced():
            problems.append(f"records_in {ledger.records_in} != kept + dropped + quarantined")
        stored = store.read_table(name, part, "documents.parquet" if partitioned else "examples.parquet")
        if len(stored) != ledger.kept:
            problems.append(f"ledger says {ledger.kept} kept, the stored table has {len(stored)} rows")
        if store.exists(name, part, "quarantine.parquet"):
            quarantined = len(store.read_table(name, part, "quarantine.parquet"))
            if quarantined != sum(ledger.quarantined.values()):
                problems.append(f"quarantine table has {quarantined} rows, the ledger {sum(ledger.quarantined.values())}")
        expected_in = None
        if upstream and partitioned:
            expected_in = len(store.read_table(upstream, part))
        elif upstream_rows is not None:
            expected_in = upstream_rows(context, store)
        if expected_in is not None and expected_in != ledger.records_in:
            problems.append(f"{upstream or 'upstream'} holds {expected_in} records, the ledger took in {ledger.records_in}")
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "records_in": MetadataValue.int(ledger.records_in),
                "kept": MetadataValue.int(ledger.kept),
                "dropped": MetadataValue.int(sum(ledger.dropped.values())),
                "quarantined": MetadataValue.int(sum(ledger.quarantined.values())),
                "problems": MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
            },
        )

    return _check
