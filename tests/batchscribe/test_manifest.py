from pathlib import Path

import pandas as pd

from batchscribe.manifest import COLUMNS, MANIFEST_CSV, MANIFEST_PARQUET, merge_rows, read_manifest, write_manifest


def test_empty_manifest_has_every_column(tmp_path: Path) -> None:
    df = read_manifest(tmp_path)
    assert list(df.columns) == list(COLUMNS) and len(df) == 0
    for column in (
        "source",
        "relative_path",
        "sha256",
        "status",
        "error",
        "language",
        "language_probability",
        "duration_s",
        "engine",
        "model",
        "options_hash",
        "txt_path",
        "vtt_path",
        "srt_path",
        "tsv_path",
        "json_path",
        "started_at",
        "finished_at",
        "wall_s",
        "realtime_factor",
        "attempts",
    ):
        assert column in COLUMNS


def test_merge_replaces_by_relative_path_and_keeps_other_rows(tmp_path: Path) -> None:
    m = merge_rows(
        read_manifest(tmp_path),
        [{"relative_path": "a.mp3", "status": "failed", "error": "bad"}, {"relative_path": "b.mp3", "status": "ok"}],
    )
    m = merge_rows(m, [{"relative_path": "a.mp3", "status": "ok", "error": ""}])
    assert m.set_index("relative_path")["status"].to_dict() == {"a.mp3": "ok", "b.mp3": "ok"}


def test_write_is_atomic_and_round_trips(tmp_path: Path) -> None:
    rows = [
        {
            "relative_path": "a.mp3",
            "status": "ok",
            "duration_s": 1.5,
            "attempts": 1,
            "started_at": pd.Timestamp("2026-01-01T00:00:00Z"),
        }
    ]
    write_manifest(merge_rows(read_manifest(tmp_path), rows), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_CSV, MANIFEST_PARQUET]  # no temp files
    back = read_manifest(tmp_path)
    assert back.loc[0, "duration_s"] == 1.5 and back.loc[0, "started_at"].year == 2026
    csv = pd.read_csv(tmp_path / MANIFEST_CSV)
    assert list(csv.columns) == list(COLUMNS)


def _writer(root: str, prefix: str, n: int) -> None:
    from batchscribe.manifest import ManifestWriter

    # One batch flushes after every row, the other buffers rows between flushes (what the flow does).
    with ManifestWriter(root, min_interval_s=0.0 if prefix == "a" else 0.02, cost_factor=0.0) as writer:
        for i in range(n):
            writer.add({"relative_path": f"{prefix}/{i:03d}.mp3", "status": "ok"})


def test_writer_flushes_the_first_row_at_once_then_batches_and_loses_nothing(tmp_path: Path) -> None:
    from batchscribe.manifest import ManifestWriter

    with ManifestWriter(tmp_path, min_interval_s=3600) as writer:
        assert writer.add({"relative_path": "a.mp3", "status": "ok"})  # the first row is on disk at once
        assert list(read_manifest(tmp_path)["relative_path"]) == ["a.mp3"]
        assert not writer.add({"relative_path": "b.mp3", "status": "failed", "error": "x"})  # buffered
        assert not writer.add({"relative_path": "c.mp3", "status": "ok"})
        assert len(read_manifest(tmp_path)) == 1
    back = read_manifest(tmp_path)  # closing flushed the rest
    assert list(back["relative_path"]) == ["a.mp3", "b.mp3", "c.mp3"] and writer.flushes == 2


def test_writer_gives_back_its_own_rows_as_written(tmp_path: Path) -> None:
    from batchscribe.manifest import ManifestWriter, append_rows, normalize

    append_rows(tmp_path, [{"relative_path": "earlier.mp3", "status": "ok"}])  # another run's row: not ours
    rows = [
        {"relative_path": "b.mp3", "status": "failed", "error": "x", "started_at": pd.Timestamp("2026-01-01T00:00Z")},
        {"relative_path": "a.mp3", "status": "ok", "duration_s": 1.5, "attempts": 2},
    ]
    with ManifestWriter(tmp_path, min_interval_s=0.0, cost_factor=0.0) as writer:
        assert writer.written().empty
        for row in rows:
            writer.add(row)
        pd.testing.assert_frame_equal(writer.written(), normalize(rows[::-1]))  # read back from the dataset
    assert writer.flushes == 2
    pd.testing.assert_frame_equal(writer.written(), normalize(rows[::-1]))  # by key, COLUMNS' dtypes
    pd.testing.assert_frame_equal(writer.written(), normalize(rows[::-1]))  # after the compacted copy is handed over


def test_writer_keeps_only_keys_past_a_flush(tmp_path: Path) -> None:
    """A batch of 100,000 files: nothing the writer holds grows with the rows or the flushes but the key set."""
    from batchscribe.manifest import ManifestWriter

    with ManifestWriter(tmp_path, min_interval_s=0.0, cost_factor=0.0) as writer:
        for i in range(20):
            writer.add({"relative_path": f"{i:02d}.mp3", "status": "ok"})
        held = {name: len(v) for name, v in vars(writer).items() if isinstance(v, (list, dict, set, tuple, bytes))}
        assert writer.flushes == 20 and held == {"pending": 0, "keys": 20}
    assert len(writer.written()) == 20


def test_two_batches_writing_one_folder_lose_no_rows(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), prefix, 25)) for prefix in ("a", "b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
        assert w.exitcode == 0
    manifest = read_manifest(tmp_path)
    assert len(manifest) == 50 and manifest["relative_path"].is_unique
    assert len(pd.read_csv(tmp_path / MANIFEST_CSV)) == 50


def _rows() -> list[dict]:
    """An ok row, a failed one and a row with a warning, with every kind of column filled or left empty."""
    ok = {
        "source": '/in/a, b "quoted".mp3',
        "relative_path": 'a, b "quoted".mp3',
        "status": "ok",
        "error": "",
        "warning": "",
        "language": "en",
        "duration_s": 10.492,
        "options": '{"beam_size": 5, "temperatures": [0.0]}',
        "formats": "txt,srt",
        "max_line_width": 42,
        "layout": "mirror",
        "srt_path": 'a, b "quoted".mp3.srt',
        "started_at": pd.Timestamp("2026-01-01T00:00:00.123456Z"),
        "finished_at": pd.Timestamp("2026-01-01T00:00:08.5Z"),
        "wall_s": 8.376544,
        "attempts": 1,
    }
    failed = {"relative_path": "notes.mp3", "status": "failed", "error": "not audio:\nline two", "attempts": 1}
    warned = {**ok, "relative_path": "sub/c.mp3", "warning": "decoded 0.42 s of the 8.75 s the file declares"}
    return [ok, failed, warned]


def test_none_is_null_and_the_csv_reads_back_equal_to_the_parquet(tmp_path: Path) -> None:
    write_manifest(merge_rows(read_manifest(tmp_path), _rows()), tmp_path)
    parquet = read_manifest(tmp_path / MANIFEST_PARQUET)
    csv = read_manifest(tmp_path / MANIFEST_CSV)
    pd.testing.assert_frame_equal(csv, parquet)
    pd.testing.assert_frame_equal(read_manifest(tmp_path), parquet)
    rows = parquet.set_index("relative_path")
    assert rows["error"].isna().tolist() == [True, False, True]  # ok rows: NULL, never ""
    assert rows["warning"].isna().tolist() == [True, True, False]
    assert (parquet.dtypes.astype(str) == pd.Series(COLUMNS)).all()


def test_duckdb_reads_both_files_alike(tmp_path: Path) -> None:
    import duckdb

    write_manifest(merge_rows(read_manifest(tmp_path), _rows()), tmp_path)
    parquet, csv = tmp_path / MANIFEST_PARQUET, tmp_path / MANIFEST_CSV
    nulls = ", ".join(f'count(*) FILTER (WHERE "{name}" IS NULL)' for name in COLUMNS)
    from_parquet = duckdb.sql(f"SELECT {nulls} FROM read_parquet('{parquet}')").fetchall()
    from_csv = duckdb.sql(f"SELECT {nulls} FROM read_csv('{csv}', header=true, all_varchar=true)").fetchall()
    assert from_parquet == from_csv  # the same cells are NULL in both files
    query = "SELECT relative_path, error IS NULL, warning IS NULL FROM {} ORDER BY relative_path"
    expected = [('a, b "quoted".mp3', True, True), ("notes.mp3", False, True), ("sub/c.mp3", True, False)]
    assert duckdb.sql(query.format(f"read_parquet('{parquet}')")).fetchall() == expected
    assert duckdb.sql(query.format(f"read_csv('{csv}', header=true)")).fetchall() == expected
    typed = duckdb.sql(f"SELECT sum(wall_s), max(started_at) FROM read_csv('{csv}', header=true)").fetchall()
    assert typed == duckdb.sql(f"SELECT sum(wall_s), max(started_at) FROM read_parquet('{parquet}')").fetchall()


def test_output_paths_are_relative_to_the_manifest_and_absolute_paths_joins_them(tmp_path: Path) -> None:
    from batchscribe.manifest import absolute_paths

    write_manifest(merge_rows(read_manifest(tmp_path), _rows()), tmp_path)
    moved = tmp_path / "copied"
    moved.mkdir()
    for name in (MANIFEST_PARQUET, MANIFEST_CSV):
        (moved / name).write_bytes((tmp_path / name).read_bytes())
    rows = absolute_paths(read_manifest(moved), moved).set_index("relative_path")
    assert rows.loc["sub/c.mp3", "srt_path"] == str(moved / 'a, b "quoted".mp3.srt')
    assert pd.isna(rows.loc["notes.mp3", "srt_path"])
    remote = absolute_paths(read_manifest(moved), "s3://bucket/out").set_index("relative_path")
    assert remote.loc["sub/c.mp3", "srt_path"] == 's3://bucket/out/a, b "quoted".mp3.srt'


def test_each_flush_appends_one_part_and_the_latest_row_per_key_wins(tmp_path: Path) -> None:
    from batchscribe.manifest import DATASET, ManifestWriter

    writer = ManifestWriter(tmp_path, min_interval_s=0.0, cost_factor=0.0)
    writer.add({"relative_path": "a.mp3", "status": "failed", "error": "busy"})
    writer.add({"relative_path": "b.mp3", "status": "ok"})
    writer.add({"relative_path": "a.mp3", "status": "ok"})  # the rerun's row, in a later part
    parts = sorted((tmp_path / DATASET).iterdir())
    assert len(parts) == 3 and [len(pd.read_parquet(p)) for p in parts] == [1, 1, 1]
    assert not (tmp_path / MANIFEST_PARQUET).exists()  # the view is written when the writer closes
    for location in (tmp_path, tmp_path / MANIFEST_PARQUET, tmp_path / MANIFEST_CSV):
        assert read_manifest(location).set_index("relative_path")["status"].to_dict() == {"a.mp3": "ok", "b.mp3": "ok"}
    assert len(pd.read_parquet(tmp_path / DATASET)) == 3  # pandas (and duckdb, polars) read the folder as is
    writer.close()
    assert len(list((tmp_path / DATASET).iterdir())) == 1  # compacted
    view = pd.read_csv(tmp_path / MANIFEST_CSV).set_index("relative_path")
    assert view["status"].to_dict() == {"a.mp3": "ok", "b.mp3": "ok"}


def test_a_flush_writes_its_own_rows_whatever_the_manifest_holds(tmp_path: Path) -> None:
    from batchscribe.manifest import DATASET, ManifestWriter, append_rows

    sizes = {}
    for n in (1_000, 10_000):
        root = tmp_path / str(n)
        append_rows(root, [{"relative_path": f"old/{i:05d}.mp3", "status": "ok"} for i in range(n)])
        before = set((root / DATASET).iterdir())
        with ManifestWriter(root, min_interval_s=0.0, cost_factor=0.0) as writer:
            for i in range(10):
                writer.add({"relative_path": f"new/{i:02d}.mp3", "status": "ok"})
            new_parts = set((root / DATASET).iterdir()) - before
            sizes[n] = sorted(p.stat().st_size for p in new_parts)
        assert len(read_manifest(root)) == n + 10
    assert len(sizes[1_000]) == 10 and sizes[1_000] == sizes[10_000]  # bytes per flush do not grow with rows


def test_an_older_output_with_only_a_manifest_parquet_keeps_its_rows(tmp_path: Path) -> None:
    from batchscribe.manifest import ManifestWriter

    write_manifest(pd.DataFrame([{"relative_path": "old.mp3", "status": "ok"}]), tmp_path)
    with ManifestWriter(tmp_path) as writer:
        writer.add({"relative_path": "new.mp3", "status": "ok"})
        assert list(read_manifest(tmp_path)["relative_path"]) == ["new.mp3", "old.mp3"]
    assert list(pd.read_parquet(tmp_path / MANIFEST_PARQUET)["relative_path"]) == ["new.mp3", "old.mp3"]


def test_two_compactions_of_one_compacted_part_keep_both_their_rows(tmp_path: Path, monkeypatch) -> None:
    """Two workers compact at once, and the newest part each read is the same compacted part: each read
    one part the other did not (written after the compacted part was named). Both keep their rows."""
    from batchscribe import manifest
    from batchscribe.manifest import DATASET, normalize

    folder = tmp_path / DATASET
    folder.mkdir()
    names = {  # the compacted part, and two parts named before it but written after it
        "old": "part-20260101T000000.000000Z-h-1-00000000~c",
        "q": "part-20250101T000000.000000Z-h-2-aaaaaaaa",
        "r": "part-20250101T000000.000000Z-h-3-bbbbbbbb",
    }
    for key, name in names.items():
        (folder / f"{name}.parquet").write_bytes(manifest._parquet_bytes(normalize([{"relative_path": key}])))
    compacted, q, r = (str(folder / f"{names[key]}.parquet") for key in ("old", "q", "r"))
    reads = {name: (paths, [manifest._read_part(p, None) for p in paths]) for name, paths in
             (("x", [compacted, q]), ("y", [compacted, r]))}  # fmt: skip
    for worker in ("x", "y"):  # both read before either writes
        monkeypatch.setattr(manifest, "_read_parts", lambda root, options, seen=reads[worker]: seen)
        manifest.compact(tmp_path)
    monkeypatch.undo()
    assert list(read_manifest(tmp_path)["relative_path"]) == ["old", "q", "r"]


def test_four_writers_appending_and_compacting_at_once_lose_no_rows(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), prefix, 25)) for prefix in ("a", "b", "c", "d")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
        assert w.exitcode == 0
    manifest = read_manifest(tmp_path)
    assert len(manifest) == 100 and manifest["relative_path"].is_unique
