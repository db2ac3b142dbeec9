"""The segments dataset: part files appended as files finish, one table for pandas, duckdb and polars."""

from __future__ import annotations

import pandas as pd

from batchscribe.segment_table import SEGMENTS_DIR, SegmentsWriter, compact, part_files, read_segments
from batchscribe.transcript import Segment, Transcript, Word


def _transcript(*texts: str, speaker: str | None = None) -> Transcript:
    segments = tuple(
        Segment(i, 2.0 * i, 2.0 * i + 1.5, " " + text, avg_logprob=-0.2, speaker=speaker,
                words=tuple(Word(2.0 * i, 2.0 * i + 1.5, " " + w, 0.5) for w in text.split()) if i else ())
        for i, text in enumerate(texts)
    )  # fmt: skip
    return Transcript("en", 0.9, 2.0 * len(texts), segments)


def test_parts_append_as_files_finish_and_read_as_one_table(tmp_path) -> None:
    out = str(tmp_path)
    with SegmentsWriter(out, min_interval_s=0.0) as writer:
        writer.add("a/talk.mp3", _transcript("Hello there.", "The bakery opens at nine."))
        writer.add("b/talk.mp3", _transcript("Nothing to see.", speaker="SPEAKER_01"))
    assert len(part_files(out)) == 2
    table = read_segments(out).to_pandas()
    assert list(table["relative_path"]) == ["a/talk.mp3", "a/talk.mp3", "b/talk.mp3"]
    assert list(table["segment"]) == [0, 1, 0] and table.loc[2, "speaker"] == "SPEAKER_01"
    assert table.loc[0, "confidence"] == round(2.718281828**-0.2, 4) and table.loc[1, "confidence"] == 0.5

    # pandas, duckdb and polars read the folder as it is.
    import duckdb
    import polars as pl

    glob = f"{out}/{SEGMENTS_DIR}/*.parquet"
    assert len(pd.read_parquet(tmp_path / SEGMENTS_DIR)) == 3
    assert duckdb.sql(f"select count(*) from read_parquet('{glob}') where text ilike '%bakery%'").fetchall() == [(1,)]
    assert pl.read_parquet(glob).filter(pl.col("speaker") == "SPEAKER_01").height == 1


def test_a_file_written_again_keeps_only_its_latest_rows_and_parts_compact(tmp_path) -> None:
    out = str(tmp_path)
    with SegmentsWriter(out, min_interval_s=0.0) as writer:
        writer.add("a.mp3", _transcript("First take.", "Second line."))
        writer.add("b.mp3", _transcript("Other file."))
    with SegmentsWriter(out, min_interval_s=3600.0) as writer:  # buffered until close: one part
        writer.add("a.mp3", _transcript("Corrected take."))
    assert len(part_files(out)) == 3
    texts = read_segments(out).to_pandas().sort_values("relative_path")["text"].tolist()
    assert texts == ["Corrected take.", "Other file."]
    assert compact(out) and len(part_files(out)) == 1
    assert read_segments(out).to_pandas().sort_values("relative_path")["text"].tolist() == texts


def test_an_empty_folder_reads_as_an_empty_table(tmp_path) -> None:
    assert read_segments(str(tmp_path)).num_rows == 0


def test_a_remote_output_folder_holds_the_dataset_too() -> None:
    out = "memory://segments-test/out"
    with SegmentsWriter(out, min_interval_s=0.0) as writer:
        writer.add("a.mp3", _transcript("Over the wire.", "And back."))
    assert [p.rsplit("/", 2)[-2] for p in part_files(out)] == [SEGMENTS_DIR]
    assert read_segments(out).column("text").to_pylist() == ["Over the wire.", "And back."]
    assert compact(out) is None  # one part: nothing to merge
