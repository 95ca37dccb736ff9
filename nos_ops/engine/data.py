"""Data for the classifier pipelines: the bundled digits, CIFAR or an image folder, batched.

:func:`load_data` gives (train, test, mean, std); ``data_dir`` is a CIFAR folder or an image
folder (:func:`is_image_folder`, read by :func:`load_image_folder_sets`).
:func:`classifier_loaders` turns either
:class:`~nos_ops.data.ImageSet` pairs (batched on the device by
:class:`~nos_ops.data.TensorLoader`, augmented with random crop, flip and cutout) or any
``torch.utils.data.Dataset`` pair (through a ``DataLoader`` over the rank's shard) into a
training and a test loader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data import (
    Augment,
    ImageSet,
    TensorLoader,
    _find_cifar,
    channel_stats,
    cifar_stats,
    load_cifar,
    load_digits,
    split_for_search,
)
from .distributed import DistributedContext

__all__ = [
    "DatasetLoader",
    "load_data",
    "classifier_loaders",
    "given_stats",
    "check_data_pair",
    "is_image_folder",
    "load_image_folder_sets",
]

HELD_OUT = 0.1
"""The share of a single image folder held out as the test set (seeded, seed 0)."""


def is_image_folder(data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir`` is an image folder rather than a CIFAR folder: a folder without
    CIFAR files that has subfolders (one per class, or ``train`` and ``test``/``val`` each
    with one per class). A missing folder is not one (CIFAR's loader says what is wrong)."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        return False
    try:
        _find_cifar(root)
    except FileNotFoundError:
        return any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())
    except ValueError:
        return False
    return False


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    """(train, test) subfolders of ``root`` when it has ``train`` and ``test`` or ``val``."""
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    return (root / "train", test) if (root / "train").is_dir() and test else None


def load_image_folder_sets(
    data_dir: str | os.PathLike, image_size: int | None = None, test: bool = True
) -> tuple[ImageSet, ImageSet | None]:
    """(train, test) of an image folder at ``image_size`` (default 32), through
    :func:`nos_ops.datasets.load_image_folder` (extra ``images``).

    ``data_dir/train`` and ``data_dir/test`` (or ``val``), each with one subfolder per class,
    are the two sets (the test classes follow the train folder's). A folder with one
    subfolder per class is the training set; with ``test`` a seeded share (:data:`HELD_OUT`)
    of it is held out as the test set, else test is None (the search needs none).
    """
    from ..datasets import list_classes, load_image_folder

    root, size = Path(data_dir).expanduser(), image_size or 32
    split = _split_folders(root)
    if split is not None:
        classes = list_classes(split[0])
        train = load_image_folder(split[0], size, classes=classes, name=root.name)
        held = (
            load_image_folder(split[1], size, classes=classes, name=f"{root.name} {split[1].name}")
            if test
            else None
        )
        return train, held
    train = load_image_folder(root, size)
    if not test:
        return train, None
    kept, held = split_for_search(train, 1 - HELD_OUT, seed=0)
    return kept, held


class DatasetLoader:
    """A ``DataLoader`` over a rank's shard of any ``Dataset``, reshuffled by ``set_epoch``."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        ctx: DistributedContext,
        seed: int,
        workers: int,
    ) -> None:
        self.sampler = DistributedSampler(
            dataset, ctx.world_size, ctx.rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self.loader = DataLoader(
            dataset,
            batch_size,
            sampler=self.sampler,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=ctx.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)


def load_data(
    data_dir: str | os.PathLike | None = None, image_size: int | None = None
) -> tuple[ImageSet, ImageSet, tuple[float, ...], tuple[float, ...]]:
    """(train, test, mean, std): CIFAR-10/100 or an image folder from ``data_dir``, or the
    bundled digits.

    Digits: the train and test splits of :func:`~nos_ops.data.load_digits` at
    ``image_size`` (default 32) and their train-set channel statistics. CIFAR: the standard
    train/test sets (32x32; other ``image_size`` values raise) and their constants. An image
    folder (:func:`is_image_folder`): :func:`load_image_folder_sets` at ``image_size``
    (default 32) and the training set's channel statistics.
    """
    if data_dir is None:
        train_set, _, test_set = load_digits(image_size or 32)
        return (train_set, test_set, *channel_stats(train_set))
    if is_image_folder(data_dir):
        train_set, held = load_image_folder_sets(data_dir, image_size)
        assert held is not None
        return (train_set, held, *channel_stats(train_set))
    if image_size not in (None, 32):
        raise ValueError(
            f"image_size={image_size} is not valid for CIFAR; its images are "
            "32x32 (leave image_size None)"
        )
    train_set = load_cifar(os.path.expanduser(data_dir), train=True)
    test_set = load_cifar(os.path.expanduser(data_dir), train=False)
    return (train_set, test_set, *cifar_stats(train_set.num_classes))


def check_data_pair(train_data: Any, test_data: Any) -> None:
    """A pipeline takes its data from the config, or both sets from the caller."""
    if (train_data is None) != (test_data is None):
        raise ValueError("pass both train_data and test_data, or neither (config data)")


def given_stats(config: Any, images: ImageSet, mean: Any, std: Any) -> tuple[Any, Any]:
    """``config.mean``/``config.std`` when given (checked against the channels of
    ``images``), else ``mean``/``std`` (None: the statistics of ``images``)."""
    if getattr(config, "mean", None) is None:
        return (mean, std) if mean is not None else channel_stats(images)
    channels = images.images.shape[1]
    if len(config.mean) != channels:
        raise ValueError(
            f"mean={config.mean!r} is not valid for {images.name!r}: its images have "
            f"{channels} channel(s), so give {channels} numbers to mean and std"
        )
    return tuple(config.mean), tuple(config.std)


def classifier_data(
    config: Any,
    ctx: DistributedContext,
    data: tuple[Any, Any] = (None, None),
    in_memory: bool = False,
) -> tuple[Any, Any, int, int]:
    """(train loader, test loader, num_classes, image size) of a classifier run: the data of
    ``config.data_dir`` (:func:`load_data`, with its statistics), or ``data``, a (train, test)
    pair of :class:`~nos_ops.data.ImageSet` or map-style datasets; ``in_memory`` turns such
    datasets into ImageSets first (at ``config.image_size``). See :func:`classifier_loaders`."""
    from ..datasets import from_dataset

    check_data_pair(*data)
    stats: tuple = (None, None)
    if data[0] is None:
        train, test, *stats = load_data(config.data_dir, config.image_size)
        data = (train, test)
    elif in_memory and not isinstance(data[0], ImageSet):
        data = tuple(
            from_dataset(d, config.image_size, name=n) for d, n in zip(data, ("train", "test"))
        )
    return classifier_loaders(data[0], data[1], ctx, config, *stats)


def classifier_loaders(
    train_data: ImageSet | Dataset,
    test_data: ImageSet | Dataset,
    ctx: DistributedContext,
    config: Any,
    mean: Any = None,
    std: Any = None,
) -> tuple[Any, Any, int, int]:
    """(train loader, test loader, num_classes, image size) for a rank.

    From ``config``: ``batch_size`` (the global batch, split over ranks), ``seed`` and, when
    it has them, ``cutout``, ``workers``, ``num_classes`` and ``image_size`` (for
    ``Dataset`` inputs). ``config.mean``/``config.std`` when given, else ``mean``/``std``,
    else the training images' statistics (:func:`given_stats`).
    """
    batch_size, seed = config.batch_size, config.seed
    cutout, workers = getattr(config, "cutout", 0), getattr(config, "workers", 0)
    if batch_size % ctx.world_size:
        raise ValueError(
            f"batch_size={batch_size} must be divisible by the world size "
            f"{ctx.world_size} (it is the global batch)"
        )
    batch = batch_size // ctx.world_size
    if isinstance(train_data, ImageSet):
        if not isinstance(test_data, ImageSet):
            raise TypeError("train_data is an ImageSet, so test_data must be one too")
        mean, std = given_stats(config, train_data, mean, std)
        size = train_data.images.shape[-1]
        common = {
            "device": ctx.device,
            "seed": seed,
            "rank": ctx.rank,
            "world_size": ctx.world_size,
        }
        train = TensorLoader(
            train_data,
            batch,
            shuffle=True,
            drop_last=True,
            augment=Augment(mean, std, max(1, size // 8), True, cutout),
            **common,
        )
        test = TensorLoader(test_data, batch, augment=Augment(mean, std, 0, False, 0), **common)
        return train, test, train_data.num_classes, size
    num_classes = getattr(train_data, "num_classes", None) or getattr(config, "num_classes", None)
    if num_classes is None:
        raise ValueError("train_data has no num_classes attribute; set config.num_classes")
    size = getattr(config, "image_size", None) or int(train_data[0][0].shape[-1])
    train = DatasetLoader(train_data, batch, True, True, ctx, seed, workers)
    test = DatasetLoader(test_data, batch, False, False, ctx, seed, workers)
    return train, test, num_classes, size
