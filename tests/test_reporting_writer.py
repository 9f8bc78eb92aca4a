"""ResultsWriter / SkipLog resume safety and shard merging."""

from __future__ import annotations

import pytest

from infodecomp.reporting.writer import (
    ResultsWriter,
    SkipLog,
    merge_parts,
    part_filename,
    read_results,
)

COLUMNS = ["item_id", "option", "text", "score"]


def rows_for(item: str, n: int) -> list[dict]:
    # A caption with a comma, quotes and a newline exercises CSV quoting in the recovery scan.
    return [
        {
            "item_id": item,
            "option": k,
            "text": f'a "{item}", line\nnext {k}',
            "score": 0.25 * k + len(item),
        }
        for k in range(n)
    ]


def write_three(run_dir) -> None:
    with ResultsWriter(run_dir, columns=COLUMNS) as w:
        w.append(rows_for("a", 2))
        w.append(rows_for("b", 1))
        w.append(rows_for("c", 3))


def test_rows_and_done_marker_are_written(tmp_path):
    write_three(tmp_path)
    assert (tmp_path / "done.txt").read_text() == "a\nb\nc\n"
    df = read_results(tmp_path)
    assert list(df.columns) == COLUMNS
    assert df["item_id"].tolist() == ["a", "a", "b", "c", "c", "c"]
    assert df["text"].iloc[0] == 'a "a", line\nnext 0'
    assert df["score"].tolist() == pytest.approx([1.0, 1.25, 1.0, 1.0, 1.25, 1.5])


def test_resume_after_kill_mid_line_and_without_done_marker(tmp_path):
    write_three(tmp_path)
    # Item d: complete rows but killed before its done marker was written.
    with ResultsWriter(tmp_path, columns=COLUMNS) as w:
        w.append(rows_for("d", 2), mark_done=False)
    # Item e: killed in the middle of a quoted field, i.e. mid-line.
    with open(tmp_path / "results.csv", "a", encoding="utf-8") as f:
        f.write('e,0,"a ""e"", line\nnex')

    w = ResultsWriter(tmp_path, columns=COLUMNS)
    assert w.done_ids() == {"a", "b", "c"}
    assert w.dropped_rows == 2
    assert w.dropped_partial
    # The resumed run redoes d and e; nothing is duplicated.
    for item in ("d", "e"):
        assert item not in w.done_ids()
        w.append(rows_for(item, 2))
    w.close()
    df = read_results(tmp_path)
    assert df["item_id"].tolist() == ["a", "a", "b", "c", "c", "c", "d", "d", "e", "e"]
    assert not df.duplicated(["item_id", "option"]).any()
    assert (tmp_path / "done.txt").read_text() == "a\nb\nc\nd\ne\n"


def test_truncated_done_line_drops_that_item(tmp_path):
    write_three(tmp_path)
    with ResultsWriter(tmp_path, columns=COLUMNS) as w:
        w.append(rows_for("dd", 1), mark_done=False)
    with open(tmp_path / "done.txt", "a") as f:
        f.write("d")  # killed while writing "dd\n"
    w = ResultsWriter(tmp_path, columns=COLUMNS)
    assert w.done_ids() == {"a", "b", "c"}
    assert w.dropped_rows == 1
    w.close()
    assert (tmp_path / "done.txt").read_text() == "a\nb\nc\n"
    assert read_results(tmp_path)["item_id"].tolist() == ["a", "a", "b", "c", "c", "c"]


def test_killed_while_writing_header(tmp_path):
    (tmp_path / "results.csv").write_text("item_id,opt")
    with ResultsWriter(tmp_path, columns=COLUMNS) as w:
        w.append(rows_for("a", 1))
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    assert read_results(tmp_path)["item_id"].tolist() == ["a"]


def test_items_without_rows_are_marked_done(tmp_path):
    with ResultsWriter(tmp_path, columns=COLUMNS) as w:
        w.append(rows_for("a", 1), items=["a", "empty"])
    w = ResultsWriter(tmp_path, columns=COLUMNS)
    assert w.done_ids() == {"a", "empty"}
    with pytest.raises(ValueError, match="already done"):
        w.append([], items=["empty"])
    w.close()
    assert read_results(tmp_path)["item_id"].tolist() == ["a"]


def test_done_ids_of_another_column(tmp_path):
    write_three(tmp_path)
    with ResultsWriter(tmp_path, columns=COLUMNS) as w:
        w.append(rows_for("z", 4), mark_done=False)
        assert w.done_ids("option") == {"0", "1", "2"}
        with pytest.raises(KeyError):
            w.done_ids("nope")


def test_header_mismatch_is_a_clear_error(tmp_path):
    write_three(tmp_path)
    with pytest.raises(ValueError, match="does not match the expected columns"):
        ResultsWriter(tmp_path, columns=["item_id", "option", "score"])


def test_bad_rows_and_rewriting_done_items_are_refused(tmp_path):
    with ResultsWriter(tmp_path, columns=COLUMNS) as w:
        with pytest.raises(ValueError, match="missing \\['score'\\]"):
            w.append([{"item_id": "a", "option": 0, "text": "x"}])
        with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
            w.append([{"item_id": "a", "option": 0, "text": "x", "score": 1, "extra": 2}])
        w.append(rows_for("a", 1))
        with pytest.raises(ValueError, match="already done"):
            w.append(rows_for("a", 1))
    with pytest.raises(ValueError, match="id column"):
        ResultsWriter(tmp_path / "x", columns=["option"])


def test_merge_of_two_rank_parts_equals_unsharded_write(tmp_path):
    items = [f"item-{i}" for i in range(12)]  # natural order differs from string order
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    with ResultsWriter(single, columns=COLUMNS) as w:
        for i, item in enumerate(items):
            w.append(rows_for(item, 1 + i % 3))
    for rank in (0, 1):
        with (
            ResultsWriter(sharded, part_filename(rank), columns=COLUMNS) as w,
            SkipLog(sharded, part_filename(rank, "skipped.csv")) as skips,
        ):
            for i, item in enumerate(items):
                if i % 2 == rank:
                    w.append(rows_for(item, 1 + i % 3))
            skips.add(f"bad-{rank}", "unreadable image")
            # killed mid-item: rows without a done marker must not reach the merge
            w.append(rows_for("item-99", 2), mark_done=False)
    assert (sharded / "done.part-1.txt").exists()

    merged = merge_parts(sharded)
    assert merged == sharded / "results.csv"
    expected = (single / "results.csv").read_text()
    assert merged.read_text() == expected
    assert (sharded / "done.txt").read_text() == (single / "done.txt").read_text()
    assert (sharded / "skipped.csv").read_text() == (
        "item_id,reason\nbad-0,unreadable image\nbad-1,unreadable image\n"
    )
    # merging again (results.csv now exists beside the parts) changes nothing
    merge_parts(sharded)
    assert merged.read_text() == expected


def test_read_results_uses_parts_when_not_merged(tmp_path):
    with ResultsWriter(tmp_path, part_filename(1), columns=COLUMNS) as w:
        w.append([{"item_id": "null", "option": 0, "text": "none", "score": None}])
    with ResultsWriter(tmp_path, part_filename(0), columns=COLUMNS) as w:
        w.append(rows_for("nan", 1))
    df = read_results(tmp_path)
    assert df["item_id"].tolist() == ["nan", "null"]  # words stay words
    assert df["text"].iloc[1] == "none"
    assert df["score"].isna().tolist() == [False, True]
    with pytest.raises(FileNotFoundError, match="run directory"):
        read_results(tmp_path / "empty")


def test_skip_log_resume(tmp_path):
    with SkipLog(tmp_path) as log:
        log.add("x1", "image missing")
        log.add("x2", "word not in caption, skipped")
        log.add("x1", "again")  # already logged: no second row
    with open(tmp_path / "skipped.csv", "a") as f:
        f.write("x3,trunc")  # killed mid-line
    log = SkipLog(tmp_path)
    assert log.count == 2
    assert log.skipped_ids() == {"x1", "x2"}
    assert log.reasons()["x2"] == "word not in caption, skipped"
    log.add("x3", "decode error")
    log.close()
    lines = (tmp_path / "skipped.csv").read_text().splitlines()
    assert lines == [
        "item_id,reason",
        "x1,image missing",
        'x2,"word not in caption, skipped"',
        "x3,decode error",
    ]
