"""Inputs: expand files, folders and globs into a batch, then stage each file locally and hash its content."""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from prefect import task

# Containers and codecs ffmpeg decodes that people keep speech in; a folder expands to these.
MEDIA_EXTENSIONS = frozenset(
    ".wav .mp3 .m4a .mp4 .m4v .mkv .mov .webm .ogg .oga .opus .flac .aac .wma .avi .mpeg .mpg .ts .3gp "
    ".amr .aif .aiff .caf .wv .mka .ac3".split()
)
HASH_CHUNK_BYTES = 1 << 20  # 1 MiB


class InputError(Exception):
    """An input that cannot be read: permanent, never retried."""


@dataclass(frozen=True)
class InputItem:
    """One file of the batch, before it is read."""

    source: str  # what the user named (an absolute local path or a URL)
    relative_path: str  # where its outputs go under the output root (posix, never escapes it)
    error: str = ""  # set when the input could not even be listed (a missing path, an empty folder)


@dataclass(frozen=True)
class StagedFile:
    """A local, hashed copy of one input (the original file itself when it is already local)."""

    source: str
    relative_path: str
    local_path: str
    sha256: str
    size_bytes: int


def is_url(text: str) -> bool:
    return "://" in text and not Path(text).exists()


def resolve_inputs(inputs: list[str]) -> list[InputItem]:
    """Expand files, folders (recursively, media files only) and globs into one item per file.

    Relative paths are taken from the deepest folder that holds every input, so `a/talk.mp3` and
    `b/talk.mp3` keep their folders and never share an output path. A missing path or a folder or glob
    with no media becomes an item carrying its error, so it ends as a manifest row of its own.
    """
    found: list[tuple[str, Path | None]] = []  # (source, the file) or (source, None) when nothing matched
    roots: list[Path] = []
    for raw in inputs:
        if is_url(raw):
            found.append((raw, None))
            continue
        path = Path(raw).expanduser()
        if glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True) if Path(m).is_file())
            roots.append(_glob_root(path))
            found.extend((str(m.resolve()), m.resolve()) for m in matches) if matches else found.append((raw, None))
        elif path.is_dir():
            files = _walk_media(path)
            roots.append(path.resolve())
            found.extend((str(f), f) for f in files) if files else found.append((raw, None))
        else:
            resolved = path.resolve() if path.exists() or path.is_symlink() else path.absolute()
            roots.append(resolved.parent)
            found.append((str(resolved), resolved))
    root = Path(os.path.commonpath([str(r) for r in roots])) if roots else Path("/")

    items: dict[str, InputItem] = {}
    for source, file in found:
        if file is None and is_url(source):
            items.setdefault(source, InputItem(source, _url_relative_path(source)))
        elif file is None:
            name = _safe_relative(Path(source).name or "input")
            items.setdefault(source, InputItem(source, name, f"no media files found in {source}"))
        else:
            rel = _safe_relative(file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name)
            error = "" if file.exists() else f"file not found: {source}"
            items.setdefault(source, InputItem(source, rel, error))
    return list(items.values())


def stage_local(item: InputItem) -> StagedFile:
    """Hash a local file in place (it is never copied). Raises InputError with the cause in words."""
    path = Path(item.source)
    try:
        if not path.exists():
            raise InputError(f"file not found: {item.source}")
        if path.is_dir():
            raise InputError(f"is a folder, not a file: {item.source}")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"file is empty (0 bytes): {item.source}")
        digest = sha256_file(path)
    except PermissionError as e:
        raise InputError(f"permission denied reading {item.source}") from e
    except OSError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read {item.source}: {e.strerror or e}") from e
    return StagedFile(item.source, item.relative_path, str(path), digest, size)


def stage_remote(item: InputItem, download_dir: Path) -> StagedFile:
    """Download a URL with fsspec into `download_dir`, streaming, then hash it."""
    import fsspec

    target = (
        download_dir / hashlib.sha256(item.source.encode()).hexdigest()[:32] / PurePosixPath(item.relative_path).name
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with fsspec.open(item.source, "rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(HASH_CHUNK_BYTES):
                dst.write(chunk)
        os.replace(tmp, target)
    except FileNotFoundError as e:
        raise InputError(f"not found: {item.source}") from e
    finally:
        tmp.unlink(missing_ok=True)
    staged = stage_local(InputItem(str(target), item.relative_path))
    return StagedFile(item.source, item.relative_path, staged.local_path, staged.sha256, staged.size_bytes)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _walk_media(folder: Path) -> list[Path]:
    # os.walk does not follow symlinked folders, so a symlink loop cannot recurse forever.
    files = []
    for dirpath, dirnames, filenames in os.walk(folder.resolve()):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in MEDIA_EXTENSIONS
        )
    return sorted(files)


def _glob_root(pattern: Path) -> Path:
    parts = []
    for part in pattern.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts).resolve() if parts else Path.cwd()


def _url_relative_path(url: str) -> str:
    _, _, rest = url.partition("://")
    return _safe_relative(rest.split("?", 1)[0].rstrip("/") or "input")


def _safe_relative(rel: str) -> str:
    """A posix relative path with no root, drive or '..' component: outputs stay under the output root."""
    parts = [p for p in PurePosixPath(rel.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    parts = [p.replace(":", "_") for p in parts]
    return "/".join(parts) or "input"


def is_transient(error: BaseException) -> bool:
    """Network hiccups and timeouts are worth retrying; missing or unreadable files are not."""
    if isinstance(error, (InputError, FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    return isinstance(error, (ConnectionError, TimeoutError, OSError))


def retry_if_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    """Prefect retry condition (a plain function: Prefect ignores other callables)."""
    try:
        state.result()
    except Exception as e:  # noqa: BLE001 - classify, do not handle
        return is_transient(e)
    return False


@task(
    task_run_name="stage-{item.relative_path}",
    retries=3,
    retry_delay_seconds=[1, 2, 4],
    retry_jitter_factor=0.2,
    retry_condition_fn=retry_if_transient,
)
def stage_input(item: InputItem, cache_dir: str) -> StagedFile:
    """Make one input local and hash its content (sha256), which keys every cache downstream."""
    if item.error:
        raise InputError(item.error)
    if is_url(item.source):
        return stage_remote(item, Path(cache_dir) / "downloads")
    return stage_local(item)
