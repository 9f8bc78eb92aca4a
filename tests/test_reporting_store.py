"""The results store: atomic batches, unique keys, skips, lock, rank merging, exports, reading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from infodecomp.reporting.store import (
    ResumeRefused,
    RunLock,
    RunLocked,
    RunStore,
    RunView,
    Skip,
    StoreError,
    export,
    read_results,
    store_path,
    wall_time,
)

COLUMNS = ["item_id", "option", "text", "score"]
KEY = ["item_id", "option"]
FP = {"estimator.n_samples": 4, "run.seed": 0}


def rows_for(item: str, n: int) -> list[dict]:
    # A caption with a comma, quotes and a newline exercises CSV quoting in the export.
    return [
        {
            "item_id": item,
            "option": k,
            "text": f'a "{item}", line\nnext {k}',
            "score": 0.25 * k + len(item),
        }
        for k in range(n)
    ]


def open_store(run_dir: Path, rank: int | None = None, **kw) -> RunStore:
    run_dir.mkdir(parents=True, exist_ok=True)
    args = {"command": "aro", "columns": COLUMNS, "key": KEY, "fingerprint": FP, **kw}
    return RunStore.open(store_path(run_dir, rank), **args)


def write_items(store: RunStore, items: list[tuple[str, int]], start: int = 0) -> None:
    for pos, (item, n) in enumerate(items, start):
        store.commit(rows_for(item, n), [(item, pos)])


def test_rows_and_finished_items_are_written(tmp_path):
    with open_store(tmp_path) as s:
        write_items(s, [("a", 2), ("b", 1), ("c", 3)])
        assert s.done() == {"a": 0, "b": 1, "c": 2}
    df = read_results(tmp_path)
    assert list(df.columns) == COLUMNS
    assert df["item_id"].tolist() == ["a", "a", "b", "c", "c", "c"]
    assert df["text"].iloc[0] == 'a "a", line\nnext 0'
    assert df["score"].tolist() == pytest.approx([1.0, 1.25, 1.0, 1.0, 1.25, 1.5])
    results, skipped = export(tmp_path)
    assert (
        pd.read_csv(results, dtype={"item_id": str})["item_id"].tolist() == df["item_id"].tolist()
    )
    assert skipped.read_text() == "item_id,reason\n"


def test_rows_come_out_in_data_set_order_whatever_the_commit_order(tmp_path):
    with open_store(tmp_path) as s:
        s.commit(rows_for("late", 1), [("late", 7)])
        s.commit(rows_for("early", 2), [("early", 2)])
    assert read_results(tmp_path)["item_id"].tolist() == ["early", "early", "late"]


WRITER = """
import os, sys
from pathlib import Path
from infodecomp.reporting.store import RunStore, store_path
s = RunStore.open(store_path(Path(sys.argv[1])), command="aro", columns={columns!r}, key={key!r},
                  fingerprint={fp!r})
s.commit([dict(item_id="a", option=0, text="t", score=1.0)], [("a", 0)])
c = s.conn
c.execute("BEGIN IMMEDIATE")
c.execute('INSERT INTO results VALUES (?, ?, ?, ?)', ("b", 0, "half", 2.0))
c.execute("INSERT INTO done (item_id, ord) VALUES ('b', 1)")
os._exit(9)  # killed in the middle of item b's transaction
"""


def test_a_kill_inside_a_transaction_leaves_whole_items_only(tmp_path):
    code = WRITER.format(columns=COLUMNS, key=KEY, fp=FP)
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False, timeout=60)
    assert res.returncode == 9
    with open_store(tmp_path) as s:
        assert s.done() == {"a": 0}
        s.commit(rows_for("b", 2), [("b", 1)])  # the resumed run redoes b; nothing duplicated
    df = read_results(tmp_path)
    assert df["item_id"].tolist() == ["a", "b", "b"]
    assert not df.duplicated(KEY).any()


def test_items_without_rows_are_done_and_done_items_are_not_written_twice(tmp_path):
    with open_store(tmp_path) as s:
        s.commit(rows_for("a", 1), [("a", 0), ("empty", 1)])
    with open_store(tmp_path) as s:
        assert s.done() == {"a": 0, "empty": 1}
        with pytest.raises(ValueError, match="already done"):
            s.commit([], [("empty", 1)])
        with pytest.raises(ValueError, match="already done"):
            s.commit(rows_for("a", 1), [("a", 0)])
    assert read_results(tmp_path)["item_id"].tolist() == ["a"]


def test_bad_rows_are_refused_and_nothing_of_the_batch_is_written(tmp_path):
    with open_store(tmp_path) as s:
        with pytest.raises(ValueError, match=r"missing \['score'\]"):
            s.commit([{"item_id": "a", "option": 0, "text": "x"}], [("a", 0)])
        with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
            s.commit([{**rows_for("a", 1)[0], "extra": 2}], [("a", 0)])
        with pytest.raises(ValueError, match="not among the batch's finished items"):
            s.commit(rows_for("z", 1), [("a", 0)])
        with pytest.raises(ValueError, match="share the key"):  # UNIQUE(item_id, option)
            s.commit(rows_for("a", 1) + rows_for("a", 1), [("a", 0)])
        assert s.done() == {}
        assert list(s.rows()) == []
    with pytest.raises(ValueError, match="lack 'item_id'"):
        open_store(tmp_path / "x", columns=["option"], key=["option"])


def test_another_config_command_or_schema_is_refused_naming_the_keys(tmp_path):
    with open_store(tmp_path) as s:
        write_items(s, [("a", 1)])
    with pytest.raises(ResumeRefused) as err:
        open_store(tmp_path, fingerprint={**FP, "estimator.n_samples": 8})
    msg = str(err.value)
    assert "estimator.n_samples: 4 -> 8" in msg and "run.out_dir" in msg
    assert "run.resume=overwrite" in msg and "\n" not in msg
    with pytest.raises(ResumeRefused, match='command: "aro" -> "localize"'):
        open_store(tmp_path, command="localize")
    with pytest.raises(ResumeRefused, match="results columns"):
        open_store(tmp_path, columns=COLUMNS[:-1], key=KEY)
    with pytest.raises(ResumeRefused, match=r"data.noise: \(absent\) -> 0.5"):
        open_store(tmp_path, fingerprint={**FP, "data.noise": 0.5})
    assert read_results(tmp_path)["item_id"].tolist() == ["a"]  # nothing was touched


def test_skips_are_recorded_once_replaced_by_newer_and_cleared_when_done(tmp_path):
    with open_store(tmp_path) as s:
        s.commit([], [], [Skip("x1", "image missing", transient=True, ord=0)])
        s.commit([], [], [Skip("x2", "word not in caption, skipped", ord=1)])
        s.commit([], [], [Skip("x1", "still missing", transient=True, ord=0)])
        s.replace_load_skips([Skip("L", "bad row", stage="load")])
        assert set(s.skipped()) == {"x1", "x2", "L"}
        assert s.skipped()["x1"].reason == "still missing" and s.skipped()["x1"].transient
        s.replace_load_skips([])  # the loader accepts L now
        s.commit(rows_for("x1", 1), [("x1", 0)])  # a retry that worked
        assert set(s.skipped()) == {"x2"}
    _, skipped = export(tmp_path)
    assert skipped.read_text() == 'item_id,reason\nx2,"word not in caption, skipped"\n'


def test_lock_names_the_holder_and_dies_with_it(tmp_path):
    store = store_path(tmp_path)
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from infodecomp.reporting.store import RunLock
        RunLock(Path({str(store)!r})).acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked) as err:
            RunLock(store, tmp_path).acquire()
        msg = str(err.value)
        assert f"pid {holder.pid}" in msg and str(tmp_path) in msg and "\n" not in msg
    finally:
        holder.kill()
        holder.wait()
    with RunLock(store):  # the kernel released the dead holder's lock
        with pytest.raises(RunLocked):
            RunLock(store).acquire()  # and one process cannot hold it twice either


def test_a_damaged_store_is_refused_and_left_alone(tmp_path):
    with open_store(tmp_path) as s:
        write_items(s, [(f"i{k}", 3) for k in range(200)])
    path = store_path(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError) as err:
        open_store(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "damaged" in msg and "run.resume=overwrite" in msg
    assert path.read_bytes() == data[: len(data) // 2]  # nothing was "repaired" away
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="damaged"):
        read_results(tmp_path)


def test_merge_of_two_rank_stores_equals_an_unsharded_write(tmp_path):
    items = [(f"item-{i}", 1 + i % 3) for i in range(12)]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    with open_store(single) as s:
        write_items(s, items)
    for rank in (0, 1):
        with open_store(sharded, rank) as s:
            for pos, (item, n) in enumerate(items):
                if pos % 2 == rank:
                    s.commit(rows_for(item, n), [(item, pos)])
            s.commit([], [], [Skip(f"bad-{rank}", "unreadable image", ord=99 + rank)])
    before = read_results(sharded)  # rank stores are read when not merged yet
    with open_store(sharded) as main:
        for rank in (0, 1):
            with RunStore.read(store_path(sharded, rank)) as part:
                main.merge(part)
    export(single)
    export(sharded)
    expected = (single / "results.csv").read_text()
    assert (sharded / "results.csv").read_text() == expected
    pd.testing.assert_frame_equal(before, read_results(single))
    assert (sharded / "skipped.csv").read_text() == (
        "item_id,reason\nbad-0,unreadable image\nbad-1,unreadable image\n"
    )
    with open_store(sharded) as main:  # merging again changes nothing
        with RunStore.read(store_path(sharded, 1)) as part:
            assert main.merge(part) == 0
    export(sharded)
    assert (sharded / "results.csv").read_text() == expected
    with open_store(tmp_path / "other", 0, fingerprint={**FP, "run.seed": 1}) as odd:
        with open_store(sharded) as main, pytest.raises(ResumeRefused, match="run.seed: 0 -> 1"):
            main.merge(odd)


def test_read_results_words_stay_words_and_nan_is_empty(tmp_path):
    with open_store(tmp_path, 1) as s:
        s.commit([{"item_id": "null", "option": 0, "text": "none", "score": None}], [("null", 1)])
    with open_store(tmp_path, 0) as s:
        s.commit([{**rows_for("nan", 1)[0], "score": float("nan")}], [("nan", 0)])
    df = read_results(tmp_path)
    assert df["item_id"].tolist() == ["nan", "null"]
    assert df["text"].iloc[1] == "none"
    assert df["score"].isna().tolist() == [True, True]
    with pytest.raises(FileNotFoundError, match="run directory"):
        read_results(tmp_path / "empty")


def test_read_results_of_a_directory_with_only_results_csv(tmp_path):
    (tmp_path / "results.csv").write_text("item_id,option,score\na,0,1.5\nb,0,\nc,1,2\n\n")
    df = read_results(tmp_path)  # a trailing blank line is no row
    assert df["item_id"].tolist() == ["a", "b", "c"] and df["score"].isna().tolist() == [
        False,
        True,
        False,
    ]
    (tmp_path / "done.txt").write_text("a\nc\nb")  # an older version's done-list: b unfinished
    assert read_results(tmp_path)["item_id"].tolist() == ["a", "c"]
    (tmp_path / "results.csv").write_text('item_id,option,text\na,0,"never closed\nb,0,x\n')
    with pytest.raises(ValueError, match="results.csv: not a well-formed results CSV"):
        read_results(tmp_path)
    (tmp_path / "results.csv").write_text("option,score\n0,1\n")
    with pytest.raises(ValueError, match="no 'item_id' column"):
        read_results(tmp_path)


def test_export_rewrites_only_what_changed(tmp_path):
    with open_store(tmp_path) as s:
        write_items(s, [("a", 2)])
    results, skipped = export(tmp_path)
    stamps = (results.stat().st_mtime_ns, skipped.stat().st_mtime_ns)
    time.sleep(0.01)
    export(tmp_path)
    assert (results.stat().st_mtime_ns, skipped.stat().st_mtime_ns) == stamps
    results.write_text(results.read_text()[:30])  # truncated by hand: the export repairs it
    export(tmp_path)
    assert len(pd.read_csv(results)) == 2


def test_legs_accumulate_and_wall_time_is_their_union(tmp_path):
    with open_store(tmp_path) as s:
        leg = s.start_leg({"pid": os.getpid()})
        s.commit(rows_for("a", 1), [("a", 0)], leg=leg)
        s.end_leg(leg, "finished")
        leg2 = s.start_leg({"pid": os.getpid()})
        s.commit([], [], [Skip("b", "bad", ord=1)], leg=leg2)
        legs = s.legs()
    assert [g["status"] for g in legs] == ["finished", "running"]
    assert [(g["items_done"], g["items_skipped"]) for g in legs] == [(1, 0), (0, 1)]
    assert json.dumps(legs)  # plain JSON
    spans = [{"started": 0, "last": 10}, {"started": 5, "last": 12}, {"started": 20, "last": 21}]
    assert wall_time(spans) == 13  # overlapping ranks count once
    with RunView(tmp_path) as view:
        assert len(view.legs()) == 2
