"""Labelled subsets: class-balanced, seeded, written to the run directory."""

from collections import Counter

import pytest

from fastssl.data.layout import DatasetIndex, Split
from fastssl.semisup.subsets import (
    human_labels,
    label_count,
    label_subset,
    oversampled,
    with_ids,
    write_subset,
)


def _split(per_class=(30, 30, 30, 30), root="/d"):
    from pathlib import Path

    paths, labels = [], []
    for c, n in enumerate(per_class):
        for i in range(n):
            paths.append(Path(root) / "train" / f"c{c}" / f"{i}.png")
            labels.append(c)
    return Split("train", paths, labels)


@pytest.mark.parametrize("spec, expected", [("10%", 12), ("1%", 1), ("100%", 120), ("7", 7),
                                            ("0.5%", 1)])
def test_label_count(spec, expected):
    assert label_count(spec, 120) == expected


@pytest.mark.parametrize("spec", ["ten", "0%", "101%", "0", "121", "-3"])
def test_bad_label_specs_are_one_line_errors(spec):
    with pytest.raises(ValueError, match="--labels"):
        label_count(spec, 120)


def test_subsets_are_class_balanced_and_identical_for_a_seed():
    split = _split()
    a = label_subset(split, "10%", seed=3)
    assert a == label_subset(split, "10%", seed=3)
    assert a != label_subset(split, "10%", seed=4)
    assert len(a) == len(set(a)) == 12
    assert sorted(Counter(split.labels[i] for i in a).values()) == [3, 3, 3, 3]
    counts = Counter(split.labels[i] for i in label_subset(split, "14", seed=0))
    assert sorted(counts.values()) == [3, 3, 4, 4]  # the remainder goes to two classes


def test_subset_needs_every_class_and_enough_images():
    with pytest.raises(ValueError, match="cannot cover the 4 classes"):
        label_subset(_split(), "3", seed=0)
    with pytest.raises(ValueError, match="class 1 has only 2 images"):
        label_subset(_split((30, 2, 30, 30)), "20", seed=0)


def test_ids_labels_and_the_written_list(tmp_path):
    split = _split(root=str(tmp_path))
    idx = label_subset(split, "8", seed=0)
    assert with_ids(split).labels == list(range(len(split)))
    human = human_labels(split, idx)
    assert (human >= 0).sum() == 8 and all(human[i] == split.labels[i] for i in idx)
    index = DatasetIndex(tmp_path, ["c0", "c1", "c2", "c3"], split, Split("val"), False)
    write_subset(index, idx, tmp_path / "run" / "labels.txt")
    lines = (tmp_path / "run" / "labels.txt").read_text().splitlines()
    assert lines == [f"train/c{split.labels[i]}/{split.paths[i].name}\tc{split.labels[i]}"
                     for i in idx]


def test_oversampling_gives_the_labelled_images_their_share():
    split = _split()  # 120 images
    idx = label_subset(split, "12", seed=0)
    natural = oversampled(split, idx, 0.0)
    assert natural.labels == list(range(120))
    half = oversampled(split, idx, 0.5)  # 108 unlabelled: each labelled image 9 times
    assert len(half) == 120 + 12 * 8 and Counter(half.labels)[idx[0]] == 9
    assert all(half.paths[k] == split.paths[i] for k, i in enumerate(half.labels))
    with pytest.raises(ValueError, match="--labelled_share"):
        oversampled(split, idx, 1.0)
