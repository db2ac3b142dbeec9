"""Per-file options from an input list's columns (language, initial_prompt, num_speakers); the row records them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from batchscribe.inputs import read_input_rows
from batchscribe.manifest import read_manifest
from batchscribe.media import InputItem
from batchscribe.options import BatchRequest
from batchscribe.result_cache import ResultCache
from flows.transcribe_batch import FilePipeline, inputs_and_file_options

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
CLI = [sys.executable, "-m", "flows.cli"]


def test_table_columns_become_per_file_options(tmp_path) -> None:
    table = pd.DataFrame(
        {
            "source": ["a.mp3", "b.mp3", "c.mp3"],
            "language": ["es", None, " "],
            "initial_prompt": [None, "Claire, bibliothèque", None],
            "num_speakers": [None, 2, None],
        }
    )
    table.to_csv(tmp_path / "list.csv", index=False)
    table.to_parquet(tmp_path / "list.parquet")
    for name in ("list.csv", "list.parquet"):
        assert read_input_rows(str(tmp_path / name)) == [
            (str(tmp_path / "a.mp3"), {"language": "es"}),
            (str(tmp_path / "b.mp3"), {"initial_prompt": "Claire, bibliothèque", "num_speakers": 2}),
            (str(tmp_path / "c.mp3"), {}),
        ]
    (tmp_path / "list.txt").write_text("a.mp3\n")
    assert read_input_rows(str(tmp_path / "list.txt")) == [(str(tmp_path / "a.mp3"), {})]


def test_a_manifest_as_input_list_carries_what_ran(tmp_path) -> None:
    options = json.dumps({"initial_prompt": "Buenas tardes.", "language": None})
    pd.DataFrame({"source": ["/x/es.mp3"], "language": ["es"], "options": [options]}).to_parquet(tmp_path / "m.parquet")
    assert read_input_rows(str(tmp_path / "m.parquet")) == [
        ("/x/es.mp3", {"language": "es", "initial_prompt": "Buenas tardes."})
    ]


def test_a_list_s_options_join_the_request_s_own_by_source(tmp_path) -> None:
    pd.DataFrame({"source": ["a.mp3", "b.mp3"], "language": ["es", None]}).to_csv(tmp_path / "l.csv", index=False)
    request = BatchRequest(
        inputs=[str(tmp_path / "c.mp3")],
        input_lists=[str(tmp_path / "l.csv")],
        output="out",
        file_options={
            str(tmp_path / "c.mp3"): {"num_speakers": 2},
            str(tmp_path / "a.mp3"): {"initial_prompt": "Hola"},
        },
    )
    inputs, options = inputs_and_file_options(request)
    assert inputs == [str(tmp_path / name) for name in ("c.mp3", "a.mp3", "b.mp3")]
    assert options == {
        str(tmp_path / "c.mp3"): {"num_speakers": 2},
        str(tmp_path / "a.mp3"): {"initial_prompt": "Hola", "language": "es"},
    }


def test_a_folder_s_options_apply_under_it_and_a_file_s_own_win(tmp_path) -> None:
    request = BatchRequest(inputs=[str(tmp_path)], output=str(tmp_path / "out"))
    options = {
        str(tmp_path / "lectures"): {"language": "fr", "initial_prompt": "Cours"},
        str(tmp_path / "lectures" / "b.mp3"): {"initial_prompt": "Claire", "num_speakers": 2},
    }
    pipeline = FilePipeline(
        request, request.transcribe.resolved(), "out", str(tmp_path), ResultCache(tmp_path), file_options=options
    )
    ran = {}
    for name in ("lectures/a.mp3", "lectures/b.mp3", "c.mp3"):
        chosen = pipeline.for_item(InputItem(str(tmp_path / name), name))
        ran[name] = (chosen.options.language, chosen.options.initial_prompt, chosen.request.diarize.num_speakers)
    assert ran == {
        "lectures/a.mp3": ("fr", "Cours", None),
        "lectures/b.mp3": ("fr", "Claire", 2),
        "c.mp3": (None, None, None),
    }
    assert pipeline.for_item(InputItem(str(tmp_path / "c.mp3"), "c.mp3")) is pipeline


def test_input_list_options_run_per_file_and_the_rows_record_them(prefect_server, cache_dir, tmp_path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("es.mp3", "fr.mp3", "en2.mp3"):
        shutil.copy(SPEECH / name, inbox / name)
    pd.DataFrame(
        {
            "source": ["es.mp3", "fr.mp3", "en2.mp3"],
            "language": ["es", "fr", None],
            "initial_prompt": ["Buenas tardes.", None, None],
            "num_speakers": [None, None, 1],
        }
    ).to_csv(inbox / "list.csv", index=False)
    out = tmp_path / "out"
    command = [*CLI, "run", "--input-list", str(inbox / "list.csv"), "-o", str(out), "-f", "txt", "--no-progress"]
    done = subprocess.run([*command, "--cache-dir", str(cache_dir)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = read_manifest(out).set_index("relative_path")
    ran = {key: json.loads(rows.loc[key, "options"]) for key in rows.index}
    assert ran["es.mp3"]["language"] == "es" and ran["es.mp3"]["initial_prompt"] == "Buenas tardes."
    assert ran["fr.mp3"]["language"] == "fr" and ran["fr.mp3"]["initial_prompt"] is None
    assert ran["en2.mp3"]["language"] is None and rows.loc["en2.mp3", "language"] == "en"  # detected
    assert rows.loc["es.mp3", "options_hash"] != rows.loc["fr.mp3", "options_hash"]
    assert rows.loc["en2.mp3", "num_speakers"] == 1 and rows.loc["en2.mp3", "speakers"] == 1
    assert pd.isna(rows.loc["es.mp3", "num_speakers"]) and pd.isna(rows.loc["es.mp3", "speakers"])
    assert "bakery" in (out / rows.loc["en2.mp3", "txt_path"]).read_text().lower()
