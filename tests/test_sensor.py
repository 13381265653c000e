"""The inbox sensor: one partition and one run per new batch, nothing for the same content again."""

import os
import time

from dagster import SkipReason, build_sensor_context

from assets.partitions import ingestion_batches
from orchestration.sensors import inbox_sensor
from resources.ingestion.inbox import Inbox


def make_inbox(tmp_path, settle_seconds=0):
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder, Inbox(path=str(folder), settle_seconds=settle_seconds)


def tick(instance, inbox, cursor=None):
    with build_sensor_context(instance=instance, cursor=cursor, resources={"inbox": inbox}) as context:
        result = inbox_sensor(context)
    if isinstance(result, SkipReason):
        return result, cursor
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result, result.cursor


def test_new_file_one_request_same_file_none_changed_file_again(tmp_path, dagster_instance):
    tmp_path, inbox = make_inbox(tmp_path)
    (tmp_path / "tickets.jsonl").write_text('{"text": "first version"}\n')
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "sla.md").write_text("# SLA\n\n99.9%\n")
    (tmp_path / ".hidden.jsonl").write_text("ignored")
    (tmp_path / "upload.jsonl.part").write_text("still copying")

    result, cursor = tick(dagster_instance, inbox)
    assert sorted(r.partition_key for r in result.run_requests) == ["policies", "tickets.jsonl"]
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == ["policies", "tickets.jsonl"]
    assert sorted(dagster_instance.get_dynamic_partitions(ingestion_batches.name)) == ["policies", "tickets.jsonl"]
    first_key = next(r.run_key for r in result.run_requests if r.partition_key == "tickets.jsonl")

    again, cursor = tick(dagster_instance, inbox, cursor)
    assert isinstance(again, SkipReason)

    # copied again with the same bytes (new mtime): still nothing
    path = tmp_path / "tickets.jsonl"
    os.utime(path, (time.time() - 50, time.time() - 50))
    touched, cursor = tick(dagster_instance, inbox, cursor)
    assert isinstance(touched, SkipReason)

    # changed content: the same partition again, with a new run key
    path.write_text('{"text": "second version"}\n')
    os.utime(path, (time.time() - 20, time.time() - 20))
    changed, cursor = tick(dagster_instance, inbox, cursor)
    [request] = changed.run_requests
    assert request.partition_key == "tickets.jsonl" and request.run_key != first_key
    assert changed.dynamic_partitions_requests == []  # the partition already exists


def test_without_cursor_the_run_key_still_deduplicates(tmp_path, dagster_instance):
    tmp_path, inbox = make_inbox(tmp_path)
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    first, _ = tick(dagster_instance, inbox)
    second, _ = tick(dagster_instance, inbox)  # cursor lost: same run key, which Dagster runs once
    assert first.run_requests[0].run_key == second.run_requests[0].run_key


def test_files_still_being_written_wait(tmp_path, dagster_instance):
    tmp_path, inbox = make_inbox(tmp_path, settle_seconds=60)
    (tmp_path / "fresh.jsonl").write_text('{"text": "x"}\n')
    result, _ = tick(dagster_instance, inbox)
    assert isinstance(result, SkipReason)
