"""Labelled subsets: class-balanced, seeded, and written to the run directory."""

from __future__ import annotations

from pathlib import Path

import torch

from fastssl.data.layout import DatasetIndex, Split
from fastssl.seeding import generator

# the subset's random stream: epoch -1, which no loader's epoch order uses
_SUBSET_STREAM = -1


def label_count(spec: str, n: int) -> int:
    """``"10%"`` of ``n`` images (at least 1) or an image count ``"N"`` (at most ``n``)."""
    s = spec.strip()
    try:
        if s.endswith("%"):
            pct = float(s[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return max(1, round(n * pct / 100))
        count = int(s)
    except ValueError:
        raise ValueError(f"--labels: expected a percentage (e.g. 1%) or an image count, got "
                         f"{spec!r}") from None
    if not 0 < count <= n:
        raise ValueError(f"--labels {spec}: the train split has {n} images")
    return count


def label_subset(split: Split, spec: str, seed: int) -> list[int]:
    """Sorted indices into ``split`` of a class-balanced subset: every class gets
    ``count // classes`` images and a seeded choice of classes one more, each class's images
    drawn at random. The same ``(split, spec, seed)`` always gives the same subset."""
    total = label_count(spec, len(split))
    members: dict[int, list[int]] = {}
    for i, y in enumerate(split.labels):
        members.setdefault(y, []).append(i)
    classes = sorted(members)
    if total < len(classes):
        raise ValueError(f"--labels {spec}: {total} images cannot cover the {len(classes)} "
                         f"classes (ask for at least {len(classes)})")
    g = generator(seed, _SUBSET_STREAM)
    base, extra = divmod(total, len(classes))
    bonus = {classes[i] for i in torch.randperm(len(classes), generator=g)[:extra].tolist()}
    chosen: list[int] = []
    for c in classes:
        want = base + (c in bonus)
        if want > len(members[c]):
            raise ValueError(f"--labels {spec}: class {c} has only {len(members[c])} images, "
                             f"a balanced subset needs {want}")
        pick = torch.randperm(len(members[c]), generator=g)[:want].tolist()
        chosen += [members[c][j] for j in pick]
    return sorted(chosen)


def subset_split(split: Split, indices: list[int]) -> Split:
    return Split(split.name, [split.paths[i] for i in indices],
                 [split.labels[i] for i in indices])


def with_ids(split: Split) -> Split:
    """``split`` with each image's position as its label: the loaders then deliver sample ids,
    and per-image targets (human labels, pseudo-labels) live in the model's buffers."""
    return Split(split.name, list(split.paths), list(range(len(split))))


def oversampled(split: Split, labelled: list[int], share: float) -> Split:
    """``with_ids(split)`` with the ``labelled`` images repeated so that they make about ``share``
    of an epoch (each at least once; 0 = the natural ratio). Self-training samples human- and
    pseudo-labelled images in a fixed ratio (Zoph et al. 2020; Xie et al. 2020), not in the ratio
    of their counts, which with 1-10% labels would leave a few human labels per batch."""
    if not 0 <= share < 1:
        raise ValueError(f"--labelled_share must be in [0, 1), got {share}")
    ids = with_ids(split)
    n_l, n_u = len(labelled), len(split) - len(labelled)
    copies = max(1, round(share * n_u / ((1 - share) * n_l))) if share and n_l else 1
    extra = labelled * (copies - 1)
    return Split(split.name, ids.paths + [split.paths[i] for i in extra], ids.labels + extra)


def human_labels(split: Split, indices: list[int]) -> torch.Tensor:
    """(N,) class of each labelled image of ``split``, -1 for the others."""
    out = torch.full((len(split),), -1, dtype=torch.long)
    out[indices] = torch.tensor([split.labels[i] for i in indices], dtype=torch.long)
    return out


def write_subset(index: DatasetIndex, indices: list[int], path: Path) -> None:
    """One line per labelled image: its path relative to the data set root, a tab, its class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    split = index.train
    path.write_text("".join(f"{split.paths[i].relative_to(index.root)}\t"
                            f"{index.classes[split.labels[i]]}\n" for i in indices))
