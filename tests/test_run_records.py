"""`lwst.run_records.RunRecords`: rows stream to a Parquet file; what stays in memory is bounded."""

from __future__ import annotations

import pyarrow.parquet as pq

from lwst import run_records
from lwst.metadata import SCHEMA, empty_record
from lwst.run_records import RunRecords


def _record(i: int, status: str = "ok", **extra) -> dict:
    record = empty_record(f"item{i:05d}", "r")
    record.update(status=status, content=f"c{i}.png", params='{"size": 32}', **extra)
    if status == "failed":
        record.update(error=f"bad {i}", error_kind="internal" if i % 2 else "input")
    return record


def test_rows_stream_to_parquet_and_the_lists_stay_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(run_records, "FLUSH_ROWS", 100)
    monkeypatch.setattr(run_records, "LISTED", 10)
    records = RunRecords(sample_size=4, spill_dir=str(tmp_path))
    sizes = []
    for start in range(0, 1000, 50):
        records.add([_record(i, "failed" if i % 3 == 0 else "ok", worker=f"w{i % 2}",
                             warp_batched=i % 5 == 0) for i in range(start, start + 50)])
        assert len(records._rows) < 100  # flushed to the file, not kept
        sizes.append(records.spill.stat().st_size)
    assert len(set(sizes)) >= 9  # the file grew as the rows came (a row group per flush)
    path = records.finish()
    assert pq.ParquetFile(path).metadata.num_row_groups == 10
    table = pq.read_table(path)
    assert table.schema == SCHEMA and table.num_rows == 1000
    summary = records.summary()
    assert summary["counts"] == {"ok": 666, "failed": 334, "skipped": 0}
    assert len(summary["failures"]) == 10 and summary["failures_total"] == 334
    assert {f["error_kind"] for f in summary["failures"]} == {"input", "internal"}  # the table's
    assert len(summary["internal_errors"]) == 10 and summary["internal_errors_total"] == 167
    assert len(summary["warp_batched"]) == 10 and summary["warp_batched_total"] == 200
    assert summary["workers"] == {"w0": 500, "w1": 500}
    records.discard()
    assert not path.exists()


def test_the_sample_does_not_depend_on_the_order_items_finish(tmp_path):
    ids = list(range(200))
    forward, backward = RunRecords(spill_dir=str(tmp_path)), RunRecords(spill_dir=str(tmp_path))
    forward.add([_record(i) for i in ids])
    backward.add([_record(i) for i in reversed(ids)])
    backward.add([_record(500, "failed")])  # failed items are not shown
    sample = [r["id"] for r in forward.sample()]
    assert sample == [r["id"] for r in backward.sample()]
    assert len(sample) == 16 and sample == sorted(sample) and len(set(sample)) == 16
    assert sample != [f"item{i:05d}" for i in range(16)]  # spread over the run, not its start
    for records in (forward, backward):
        records.discard()


def test_an_item_reported_twice_keeps_its_last_row(tmp_path, monkeypatch):
    monkeypatch.setattr(run_records, "FLUSH_ROWS", 3)
    records = RunRecords(spill_dir=str(tmp_path))
    records.add([_record(1, "failed"), _record(2), _record(3)])
    records.add([_record(4), _record(1), _record(5)])  # item 1, retried, finished
    rows = {r["id"]: r["status"] for r in pq.read_table(records.finish()).to_pylist()}
    assert rows == {f"item{i:05d}": "ok" for i in range(1, 6)}
    assert len(pq.read_table(records.spill)) == 5
    records.discard()


def test_an_empty_run_publishes_an_empty_table(tmp_path):
    records = RunRecords(spill_dir=str(tmp_path))
    table = pq.read_table(records.finish())
    assert table.num_rows == 0 and table.schema == SCHEMA
    assert records.sample() == []
    records.discard()


def test_an_item_reported_twice_is_sampled_once_with_its_last_record(tmp_path):
    records = RunRecords(sample_size=4, spill_dir=str(tmp_path))
    records.add([_record(i, output=f"first{i}") for i in range(3)])
    records.add([_record(1, output="second")])
    sample = records.sample()
    assert [r["id"] for r in sample] == ["item00000", "item00001", "item00002"]
    assert sample[1]["output"] == "second"
    records.discard()



def test_fallbacks_are_counted_past_the_listed_low_confidence_rows(tmp_path, monkeypatch):
    """Every item whose field the fallback replaced is counted, also beyond the rows listed,
    against the warp method its own settings asked for (a row may override it)."""
    monkeypatch.setattr(run_records, "LISTED", 2)
    records = RunRecords(min_confidence=0.1, spill_dir=str(tmp_path))
    rows = [*(_record(i, warp_confidence=0.05, warp_applied="damp") for i in range(3)),
            _record(3, warp_confidence=0.05, warp_applied="affine"),
            _record(4, warp_confidence=0.8, warp_applied="learned")]
    for row, method in zip(rows, ["learned"] * 3 + ["affine", "learned"], strict=True):
        row["params"] = f'{{"warp_method": "{method}"}}'
    records.add(rows)
    summary = records.summary()
    assert len(summary["low_confidence"]) == 2 and summary["low_confidence_total"] == 4
    assert summary["fallback_total"] == 3
    records.discard()
