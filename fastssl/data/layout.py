"""The dataset layout every loader reads.

``DIR/train/<class>/<name>.<jpg|jpeg|png>``, optional ``DIR/val/<class>/...`` and optional masks
``DIR/masks/<split>/<class>/<name>.png`` (255 = foreground). Classes are only used for evaluation.
Without ``val/``, a fixed 20% of ``train/`` (every fifth file of each class, in sorted order) is
held out for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# video sets (fastssl.data.av, prepare-video): a .mp4 beside a .webm of the same clip is its
# NVDEC copy, not another sample
VIDEO_EXTENSIONS = (".webm", ".mp4")
HOLDOUT_EVERY = 5  # without val/: every fifth image of a class is held out (20%)


class DataError(ValueError):
    """Bad dataset input; the message is one line naming the path."""


@dataclass
class Split:
    name: str  # the folder the files live in ("train" or "val")
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class DatasetIndex:
    root: Path
    classes: list[str]
    train: Split
    val: Split
    holdout: bool  # True when val was carved out of train/

    def mask_path(self, image: Path) -> Path:
        return mask_path(self.root, image)


def mask_path(root: Path, image: Path) -> Path:
    """Where the mask of ``image`` lives (the same relative path under masks/, as .png)."""
    return root / "masks" / image.relative_to(root).with_suffix(".png")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header only."""
    from PIL import Image

    with Image.open(path) as im:  # lazy: reads the header only
        return im.size


def _images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS]
    webm = {p.stem for p in files if p.suffix.lower() == ".webm"}
    return sorted(p for p in files if not (p.suffix.lower() == ".mp4" and p.stem in webm))


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _scan_split(root: Path, name: str, classes: list[str]) -> Split:
    split = Split(name)
    for label, cls in enumerate(classes):
        folder = root / name / cls
        if not folder.is_dir():
            continue
        for p in _images(folder):
            split.paths.append(p)
            split.labels.append(label)
    return split


def scan(root: str | Path) -> DatasetIndex:
    """Index a dataset directory, raising :class:`DataError` with the offending path."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"dataset directory not found: {root}")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"no train/ folder in dataset directory {root} "
                        "(expected DIR/train/<class>/<image>.jpg)")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"no class folders in {train_dir} (expected {train_dir}/<class>/*.jpg)")
    train = _scan_split(root, "train", classes)
    if not train.paths:
        raise DataError(f"no images (*.jpg, *.jpeg, *.png) under {train_dir}")
    if (root / "val").is_dir():
        unknown = sorted({p.name for p in (root / "val").iterdir() if p.is_dir()} - set(classes))
        if unknown:
            raise DataError(f"{root / 'val'} has classes not in train/: {', '.join(unknown)}")
        val = _scan_split(root, "val", classes)
        if not val.paths:
            raise DataError(f"no images under {root / 'val'}")
        return DatasetIndex(root, classes, train, val, holdout=False)
    kept, held = Split("train"), Split("train")
    seen: dict[int, int] = {}
    for p, y in zip(train.paths, train.labels, strict=True):
        i = seen[y] = seen.get(y, -1) + 1
        target = held if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else kept
        target.paths.append(p)
        target.labels.append(y)
    if not kept.paths or not held.paths:
        raise DataError(f"too few images under {train_dir} to hold out 20% for evaluation")
    return DatasetIndex(root, classes, kept, held, holdout=True)
