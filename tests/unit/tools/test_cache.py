"""The feature cache: round trips, counters, versions, persistence and two writers at once."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kdsl._internal.hashing import sha256_file
from kdsl.errors import FeatureError
from kdsl.tools.cache import FeatureCache
from kdsl.tools.images import open_rgb


def test_json_and_array_round_trip(tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    cache.put("ocr", "v1", "k1", {"lines": ["退款成功", "refund ok"], "n": 2})
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put("embed", "v1", "k1", arr)
    assert cache.get("ocr", "v1", "k1") == {"lines": ["退款成功", "refund ok"], "n": 2}
    back = cache.get("embed", "v1", "k1")
    assert back.dtype == np.float32 and back.shape == (3, 4) and np.array_equal(back, arr)
    assert (cache.hits, cache.misses) == (2, 0)


def test_misses_versions_and_contains(tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    cache.put("ocr", "v1", "k", [1, 2])
    assert cache.get("ocr", "v2", "k") is None  # a new tool version never sees old values
    assert cache.get("visual", "v1", "k", default="none") == "none"
    assert (cache.hits, cache.misses) == (0, 2)
    assert ("ocr", "v1", "k") in cache and ("ocr", "v2", "k") not in cache and "k" not in cache
    assert (cache.hits, cache.misses) == (0, 2)  # `in` is not a lookup
    cache.put("ocr", "v1", "k", [3])  # replaces
    assert cache.get("ocr", "v1", "k") == [3]
    assert len(cache) == 1 and cache.count("ocr") == 1 and cache.count("ocr", "v2") == 0


def test_many_and_persistence(tmp_path):
    path = tmp_path / "sub" / "f.sqlite"  # parent folders are created
    with FeatureCache(path) as cache:
        cache.put_many("e", "v", {f"k{i}": np.full(4, i, dtype=np.float32) for i in range(1000)})
    reopened = FeatureCache(path)
    got = reopened.get_many("e", "v", ["k0", "k999", "absent", "k0"])
    assert set(got) == {"k0", "k999"} and got["k999"][0] == 999
    assert (reopened.hits, reopened.misses) == (2, 1)
    assert len(reopened.get_many("e", "v", [f"k{i}" for i in range(1000)])) == 1000  # beyond one SQL chunk


def test_rejects_values_it_cannot_store(tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        cache.put("t", "v", "k", object())
    with pytest.raises(ValueError):
        cache.put("t", "v", "k", np.array([object()]))  # no pickled arrays


def test_corrupt_cache_file_is_named(tmp_path):
    bad = tmp_path / "f.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FeatureError, match="f.sqlite") as info:
        FeatureCache(bad)
    assert "move it aside" in str(info.value) and "delete" not in str(info.value)


def test_a_cache_under_a_file_names_the_folder(tmp_path):
    (tmp_path / "home").write_text("a file, not a folder")
    with pytest.raises(FeatureError, match="home/cache: cannot create the feature cache's folder \\(Not a directory"):
        FeatureCache(tmp_path / "home" / "cache" / "f.sqlite")


# Root ignores file permissions; without CAP_DAC_OVERRIDE (setpriv drops it) it meets them as a user does.
NO_OVERRIDE = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
               if os.geteuid() == 0 else [])


@pytest.mark.skipif(bool(NO_OVERRIDE) and not shutil.which("setpriv"), reason="root without setpriv")
def test_a_read_only_cache_is_blamed_on_permissions_never_on_the_file(tmp_path):
    path = tmp_path / "cache" / "f.sqlite"
    cache = FeatureCache(path)
    cache.put("ocr", "1", "k", {"text": "kept"})
    cache.close()
    for p in (path, path.parent):
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        code = ("from kdsl.tools.cache import FeatureCache\n"
                f"FeatureCache({str(path)!r})")
        got = subprocess.run([*NO_OVERRIDE, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)
    assert got.returncode != 0
    assert "no permission to write" in got.stderr and "the cache itself is intact" in got.stderr, got.stderr
    assert "delete" not in got.stderr and "move it aside" not in got.stderr
    assert FeatureCache(path).get("ocr", "1", "k") == {"text": "kept"}


def _writer(path: str, worker: int, n: int) -> None:
    cache = FeatureCache(path)
    for i in range(n):
        cache.put("t", "v", f"{worker}-{i}", {"worker": worker, "i": i})
        cache.get("t", "v", f"{1 - worker}-{i}")


def test_two_processes_write_the_same_file(tmp_path):
    path = tmp_path / "f.sqlite"
    FeatureCache(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 150)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = FeatureCache(path)
    assert cache.count("t", "v") == 300
    assert cache.get("t", "v", "1-149") == {"worker": 1, "i": 149}


def test_sha256_file(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc" * 1_000_000)
    assert sha256_file(f) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
    with pytest.raises(FeatureError, match="missing.jpg"):
        sha256_file(tmp_path / "missing.jpg")


def test_open_rgb_names_bad_files(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00\x01not an image" * 50)
    with pytest.raises(FeatureError, match="garbage.jpg"):
        open_rgb(garbage)
    with pytest.raises(FeatureError, match="nope.png.*not found"):
        open_rgb(tmp_path / "nope.png")
