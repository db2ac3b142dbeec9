import os
from pathlib import Path

import pytest

from batchscribe.downloads import stage_local
from batchscribe.errors import InputError
from batchscribe.inputs import resolve_inputs
from batchscribe.media import InputItem


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_expands_recursively_to_media_files_with_mirrored_paths(tmp_path: Path) -> None:
    touch(tmp_path / "in" / "a" / "talk.mp3")
    touch(tmp_path / "in" / "b" / "talk.mp3")
    touch(tmp_path / "in" / "talk.wav")
    touch(tmp_path / "in" / "notes.txt")
    touch(tmp_path / "in" / ".hidden.mp3")
    items = resolve_inputs([str(tmp_path / "in")])
    assert [i.relative_path for i in items] == ["a/talk.mp3", "b/talk.mp3", "talk.wav"]
    assert all(Path(i.source).is_absolute() and not i.error for i in items)


def test_two_folders_keep_their_names_so_same_stems_never_collide(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "talk.mp3")
    touch(tmp_path / "b" / "talk.mp3")
    items = resolve_inputs([str(tmp_path / "a"), str(tmp_path / "b")])
    assert sorted(i.relative_path for i in items) == ["a/talk.mp3", "b/talk.mp3"]


def test_glob_and_single_file(tmp_path: Path) -> None:
    touch(tmp_path / "x" / "one.mp3")
    touch(tmp_path / "x" / "deep" / "two.mp3")
    items = resolve_inputs([str(tmp_path / "x" / "**" / "*.mp3")])
    assert sorted(i.relative_path for i in items) == ["deep/two.mp3", "one.mp3"]
    assert [i.relative_path for i in resolve_inputs([str(tmp_path / "x" / "one.mp3")])] == ["one.mp3"]


def test_missing_path_and_empty_folder_become_items_with_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    missing, empty = resolve_inputs([str(tmp_path / "nope.mp3"), str(tmp_path / "empty")])
    assert missing.error.startswith("file not found") and missing.relative_path == "nope.mp3"
    assert empty.error.startswith("no media files found")


def test_symlink_loop_does_not_recurse(tmp_path: Path) -> None:
    touch(tmp_path / "in" / "a.mp3")
    os.symlink(tmp_path / "in", tmp_path / "in" / "loop")
    assert [i.relative_path for i in resolve_inputs([str(tmp_path / "in")])] == ["a.mp3"]


def test_duplicate_inputs_are_one_item(tmp_path: Path) -> None:
    f = touch(tmp_path / "a.mp3")
    assert len(resolve_inputs([str(f), str(f), str(tmp_path)])) == 1


def test_stage_hashes_content(tmp_path: Path) -> None:
    f = touch(tmp_path / "a.mp3", b"hello")
    staged = stage_local(InputItem(str(f), "a.mp3"))
    assert staged.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert staged.size_bytes == 5 and staged.local_path == str(f)


def test_stage_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"empty \(0 bytes\)"):
        stage_local(InputItem(str(touch(tmp_path / "z.mp3", b"")), "z.mp3"))
    with pytest.raises(InputError, match="file not found"):
        stage_local(InputItem(str(tmp_path / "gone.mp3"), "gone.mp3"))


def test_input_lists_from_text_csv_and_parquet(tmp_path: Path) -> None:
    import pandas as pd

    from batchscribe.inputs import read_input_list

    a, b = touch(tmp_path / "media" / "a.mp3"), touch(tmp_path / "media" / "b.mp3")
    (tmp_path / "list.txt").write_text("# inventory\nmedia/a.mp3\n\n" + str(b) + "\nhttps://example.org/c.mp3\n")
    assert read_input_list(str(tmp_path / "list.txt")) == [str(a), str(b), "https://example.org/c.mp3"]
    pd.DataFrame({"source": [str(a), str(b)], "status": ["ok", "failed"]}).to_parquet(tmp_path / "manifest.parquet")
    assert read_input_list(str(tmp_path / "manifest.parquet")) == [str(a), str(b)]
    pd.DataFrame({"url": ["media/b.mp3"]}).to_csv(tmp_path / "inventory.csv", index=False)
    assert read_input_list(str(tmp_path / "inventory.csv")) == [str(b)]
    with pytest.raises(InputError, match="input list not found"):
        read_input_list(str(tmp_path / "nope.txt"))


def test_a_request_needs_inputs_or_a_list() -> None:
    from pydantic import ValidationError

    from batchscribe.options import BatchRequest

    with pytest.raises(ValidationError, match="at least one input"):
        BatchRequest(output="out")
    assert BatchRequest(output="out", input_lists=["l.txt"]).inputs == []


def test_credentials_in_a_url_never_reach_paths_or_the_manifest() -> None:
    from batchscribe.urls import redact
    from batchscribe.urls import relative_path as _url_relative_path

    url = "https://alice:s3cret@media.example.org/talks/a.mp3?token=x"
    assert "s3cret" not in _url_relative_path(url) and _url_relative_path(url) == "media.example.org/talks/a.mp3"
    assert redact(url) == "https://***@media.example.org/talks/a.mp3?token=x"
    assert redact("/local/a.mp3") == "/local/a.mp3"


def test_fifo_and_symlink_loop_are_named_for_what_they_are(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.mp3")
    with pytest.raises(InputError, match="not a regular file"):
        stage_local(InputItem(str(tmp_path / "pipe.mp3"), "pipe.mp3"))
    os.symlink(tmp_path / "loop.mp3", tmp_path / "loop.mp3")
    with pytest.raises(InputError, match="broken or looping symlink"):
        stage_local(InputItem(str(tmp_path / "loop.mp3"), "loop.mp3"))


def test_urls_that_differ_only_in_their_query_get_their_own_keys() -> None:
    from batchscribe.urls import relative_path as url_key

    one, two = url_key("https://h.example/get.mp3?id=1"), url_key("https://h.example/get.mp3?id=2")
    assert one != two and one == "h.example/get~id=1.mp3"
    # A signature names no content: the same object signed again keeps its key.
    signed = "https://h.example/get.mp3?id=1&X-Amz-Signature=abc&X-Amz-Expires=60"
    assert url_key(signed) == one == url_key("https://h.example/get.mp3?X-Amz-Signature=def&id=1")
    items = resolve_inputs(["https://h.example/get.mp3?id=1", "https://h.example/get.mp3?id=2"])
    assert len({i.relative_path for i in items}) == 2


def test_adding_an_input_root_later_never_rekeys_files_already_in_the_manifest(tmp_path: Path) -> None:
    for year in ("2023", "2024"):
        (tmp_path / "data" / year).mkdir(parents=True)
        (tmp_path / "data" / year / "a.mp3").write_bytes(b"x")
    first = resolve_inputs([str(tmp_path / "data" / "2023")])
    assert [i.relative_path for i in first] == ["a.mp3"]
    known = {i.source: i.relative_path for i in first}  # what the manifest records after the first run
    both = resolve_inputs([str(tmp_path / "data" / "2023"), str(tmp_path / "data" / "2024")], known=known)
    assert {i.source: i.relative_path for i in both} == {
        str(tmp_path / "data" / "2023" / "a.mp3"): "a.mp3",
        str(tmp_path / "data" / "2024" / "a.mp3"): "2024/a.mp3",
    }
    # Alone, the second root's a.mp3 would take "a.mp3": it is another source's, so it gets more of its path.
    [later] = resolve_inputs([str(tmp_path / "data" / "2024")], known=known)
    assert later.relative_path == "2024/a.mp3"


def test_each_input_is_parsed_once_and_staged_by_its_location(tmp_path: Path, monkeypatch) -> None:
    import fsspec

    from batchscribe import urls
    from tasks.fetch import stage_input

    fsspec.filesystem("memory").pipe({"/parsed-once/talk.mp3": b"remote bytes"})
    file = touch(tmp_path / "in" / "a.mp3", b"local bytes")
    remote, local = resolve_inputs([str(tmp_path / "in"), "memory://parsed-once/"])
    assert local.location == urls.Location(str(file), "file", str(file))
    assert (remote.location.protocol, remote.location.path) == ("memory", "/parsed-once/talk.mp3")

    def parsed_again(text: str) -> None:
        raise AssertionError(f"{text} parsed again")

    monkeypatch.setattr(urls, "parse", parsed_again)
    monkeypatch.setattr(urls, "is_url", parsed_again)
    cache = str(tmp_path / "cache")
    assert Path(stage_input.fn(local, cache).local_path).read_bytes() == b"local bytes"
    assert Path(stage_input.fn(remote, cache).local_path).read_bytes() == b"remote bytes"
