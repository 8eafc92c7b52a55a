from __future__ import annotations

from collections import Counter

import pytest

from kdsl.data import Dataset, Sample, Split, SplitConfig, Turn, k_shot, split_dataset, with_test_file
from kdsl.errors import DataError


def test_split_is_a_stratified_seeded_partition(mdsirc, tmp_path):
    split = split_dataset(mdsirc, SplitConfig(seed=3))
    parts = [set(split.search), set(split.verify), set(split.test)]
    assert sum(map(len, parts)) == len(mdsirc) and set.union(*parts) == {s.id for s in mdsirc.samples}
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # every (task, label) with at least 3 samples lands in all three parts, in about the asked proportion
    strata = Counter((s.task, s.label) for s in mdsirc.samples)
    where = {i: p for p, ids in zip("svt", parts, strict=True) for i in ids}
    for key, n in strata.items():
        got = Counter(where[s.id] for s in mdsirc.samples if (s.task, s.label) == key)
        if n >= 3:
            assert set(got) == {"s", "v", "t"}, key
        assert abs(got["s"] - 0.6 * n) <= 1.5, (key, got)
    assert split_dataset(mdsirc, SplitConfig(seed=3)) == split
    assert split_dataset(mdsirc, SplitConfig(seed=4)) != split
    back = Split.load(split.save(tmp_path / "split.json"))
    assert back == split
    back.check(mdsirc)
    with pytest.raises(DataError, match="fingerprint"):
        back.check(mdsirc.for_task("image_scene"))


def test_split_config_must_sum_to_one():
    with pytest.raises(ValueError, match="must be 1"):
        SplitConfig(search=0.5, verify=0.2, test=0.2)


def test_k_shot_takes_k_per_label_from_the_pool(mdsirc):
    split = split_dataset(mdsirc)
    ids = k_shot(mdsirc, 4, ids=split.search, seed=1)
    assert set(ids) <= set(split.search)
    per = Counter((mdsirc.get(i).task, mdsirc.get(i).label) for i in ids)
    assert max(per.values()) == 4
    pool = Counter((mdsirc.get(i).task, mdsirc.get(i).label) for i in split.search)
    assert all(per[k] == min(4, n) for k, n in pool.items())
    assert k_shot(mdsirc, 4, ids=split.search, seed=1) == ids


def test_split_with_k_shot_keeps_verify_and_test(mdsirc):
    full = split_dataset(mdsirc, SplitConfig(seed=2))
    few = split_dataset(mdsirc, SplitConfig(seed=2, k_shot=3))
    assert few.verify == full.verify and few.test == full.test
    assert set(few.search) < set(full.search)
    per = Counter((mdsirc.get(i).task, mdsirc.get(i).label) for i in few.search)
    assert max(per.values()) == 3


def _data(name: str, rows: list[tuple[str, str]], labels: tuple[str, ...] = ("a", "b")) -> Dataset:
    return Dataset(name=name, source=f"{name}.jsonl", label_spaces={"t": labels},
                   samples=tuple(Sample(id=i, task="t", label=lab, turns=(Turn(role="user", text=i),))
                                 for i, lab in rows))


def test_a_test_file_joins_the_training_data_with_its_ids_kept_apart():
    train = _data("train", [("1", "a"), ("2", "b")])
    merged, test_ids = with_test_file(train, _data("test", [("2", "a"), ("3", "b")]))
    assert test_ids == ("test:2", "3")  # a clashing id is renamed, never merged with the training sample
    assert [s.id for s in merged.samples] == ["1", "2", "test:2", "3"]
    assert merged.get("test:2").label == "a" and merged.get("2").label == "b"
    with pytest.raises(DataError, match=r"test\.jsonl.*'9'.*label 'c' is not in the training data's label space"):
        with_test_file(train, _data("test", [("9", "c")], labels=("a", "b", "c")))
