"""Data for search and evaluation (Sec. 4.1, App. A): CIFAR, the bundled digits, augmentation.

* ``load_cifar`` reads the standard python-pickle folders ``cifar-10-batches-py`` and
  ``cifar-100-python`` (no torchvision) into an :class:`ImageSet` of uint8 NCHW images.
* ``load_digits`` is the default data set that needs no download: scikit-learn's 8x8 digits
  resized to 3 x 32 x 32, split 60/20/20 with a fixed seed.
* ``split_for_search`` halves a training set into the weight and architecture sets of the
  bilevel search (25K/25K on CIFAR-10, Eqs. 12-13).
* ``random_crop``, ``random_flip``, ``cutout`` and ``normalize`` work on whole batches on any
  device; :class:`Augment` composes them in the DARTS order and :class:`TensorLoader` batches,
  shuffles and shards an :class:`ImageSet` like ``DataLoader`` + ``DistributedSampler``.
"""

from __future__ import annotations

import importlib
import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .ops.helpers import check_bool, check_int, check_positive, check_probability

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "ImageSet",
    "load_cifar",
    "load_digits",
    "split_for_search",
    "channel_stats",
    "cifar_stats",
    "random_crop",
    "random_flip",
    "cutout",
    "normalize",
    "Augment",
    "TensorLoader",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled images in memory: ``images`` N x C x H x W uint8, ``labels`` N int64."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        for field in ("images", "labels"):
            if not isinstance(getattr(self, field), torch.Tensor):
                raise TypeError(
                    f"{field} is a {type(getattr(self, field)).__name__}; expected a torch "
                    "tensor (torch.from_numpy(array) converts a numpy array)"
                )
        if not isinstance(self.name, str):
            raise TypeError(f"name={self.name!r} is not valid; expected a string")
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise ValueError(
                f"images must be a uint8 tensor N x C x H x W, got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],) or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be an int64 tensor of shape ({self.images.shape[0]},), got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if (
            not isinstance(self.num_classes, int)
            or isinstance(self.num_classes, bool)
            or (self.num_classes < 1)
        ):
            raise ValueError(f"num_classes={self.num_classes!r} is not valid; expected an int >= 1")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise ValueError(
                f"labels span [{int(self.labels.min())}, {int(self.labels.max())}]; expected "
                f"values in [0, {self.num_classes - 1}] for num_classes={self.num_classes}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One (C x H x W uint8 image, label) pair, as a ``TensorDataset`` gives."""
        return self.images[index], self.labels[index]

    def subset(self, indices: torch.Tensor) -> ImageSet:
        """The images at ``indices`` (a 1-d integer tensor), in that order."""
        return ImageSet(self.images[indices], self.labels[indices], self.num_classes, self.name)


# ----------------------------------------------------------------------------- CIFAR reader


@dataclass(frozen=True)
class _CifarFormat:
    name: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    num_classes: int


_CIFAR_FORMATS = (
    _CifarFormat(
        "cifar10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
    ),
    _CifarFormat("cifar100", "cifar-100-python", ("train",), ("test",), "fine_labels", 100),
)
_CIFAR_ROW = 3 * 32 * 32
# The only globals a CIFAR pickle holds: numpy arrays, dtypes, scalars and py2 byte strings.
_PICKLE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: no code runs from the file."""

    def find_class(self, module: str, name: str) -> Any:
        module = module.replace("numpy._core.", "numpy.core.")
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module.startswith("numpy.core."):
            import numpy as np

            if int(np.__version__.split(".")[0]) >= 2:
                module = module.replace("numpy.core.", "numpy._core.")
            return getattr(importlib.import_module(module), name)
        return super().find_class(module, name)


def _find_cifar(root: Path) -> tuple[Path, _CifarFormat]:
    """The CIFAR folder at or directly under ``root`` and its format."""
    expected = " or ".join(repr(f.folder) for f in _CIFAR_FORMATS)
    if not root.is_dir():
        raise FileNotFoundError(
            f"root={str(root)!r} is not a folder; expected a {expected} folder or the folder "
            "holding one"
        )
    here = [f for f in _CIFAR_FORMATS if any((root / n).is_file() for n in f.train + f.test)]
    below = [f for f in _CIFAR_FORMATS if (root / f.folder).is_dir()]
    found = [(root, f) for f in here] if here else [(root / f.folder, f) for f in below]
    if not found:
        raise FileNotFoundError(
            f"root={str(root)!r} holds no CIFAR data; expected a {expected} folder or the "
            "folder holding one"
        )
    if len(found) > 1:
        raise ValueError(
            f"root={str(root)!r} holds both CIFAR-10 and CIFAR-100 "
            f"({', '.join(str(p) for p, _ in found)}); pass the one to read"
        )
    return found[0]


def _read_cifar_file(path: Path, fmt: _CifarFormat) -> tuple[Any, Any]:
    """(data N x 3072 uint8, labels N int64) numpy arrays from one pickled batch."""
    import numpy as np

    try:
        with path.open("rb") as file:
            batch = _CifarUnpickler(file, encoding="bytes").load()
    except Exception as error:
        raise ValueError(f"{path} is not a readable CIFAR python pickle: {error}") from error
    if not isinstance(batch, dict):
        raise ValueError(f"{path} holds a {type(batch).__name__}; expected a dict")
    fields = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", fmt.label_key) if k not in fields]
    if missing:
        raise ValueError(
            f"{path} lacks the keys {missing}; {fmt.name} batches hold 'data' and {fmt.label_key!r}"
        )
    data, labels = fields["data"], np.asarray(fields[fmt.label_key])
    is_rows = isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == _CIFAR_ROW
    if not is_rows or data.dtype != np.uint8:
        raise ValueError(
            f"{path}: 'data' is {type(data).__name__} {getattr(data, 'dtype', '')} of shape "
            f"{getattr(data, 'shape', None)}; expected a uint8 array of shape (N, {_CIFAR_ROW})"
        )
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: {fmt.label_key!r} has shape {labels.shape} and dtype {labels.dtype}; "
            f"expected {data.shape[0]} integer labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= fmt.num_classes):
        raise ValueError(
            f"{path}: labels span [{labels.min()}, {labels.max()}]; expected values in "
            f"[0, {fmt.num_classes - 1}] for {fmt.name}"
        )
    return data, labels.astype(np.int64)


def load_cifar(root: str | Path, train: bool = True) -> ImageSet:
    """CIFAR-10 or CIFAR-100 from its python-pickle folder: N x 3 x 32 x 32 uint8 images.

    ``root`` is a ``cifar-10-batches-py`` / ``cifar-100-python`` folder, or the folder holding
    one; the format is told by the files present (``data_batch_1..5``/``test_batch`` or
    ``train``/``test``). Each 3072-byte row is the R plane, then G, then B, each 32 x 32
    row-major. The files are unpickled with only numpy arrays allowed, so no code runs.
    """
    import numpy as np

    check_bool("train", train)
    folder, fmt = _find_cifar(Path(root))
    names = fmt.train if train else fmt.test
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is missing {missing}; a {fmt.folder} folder holds "
            f"{list(fmt.train + fmt.test)}"
        )
    batches = [_read_cifar_file(folder / n, fmt) for n in names]
    data = np.concatenate([d for d, _ in batches])
    labels = np.concatenate([lab for _, lab in batches])
    images = torch.from_numpy(data).view(-1, 3, 32, 32)
    return ImageSet(images, torch.from_numpy(labels), fmt.num_classes, fmt.name)


# ----------------------------------------------------------------------- digits and splits


def load_digits(image_size: int = 32, seed: int = 0) -> tuple[ImageSet, ImageSet, ImageSet]:
    """scikit-learn's 1797 8x8 digits as 3 x S x S uint8 images: (train, val, test) 60/20/20.

    Grey levels 0..16 are scaled to 0..255, resized bilinearly to ``image_size`` and
    replicated into 3 channels. The split is a permutation drawn from ``seed``: deterministic.
    """
    check_positive("image_size", image_size)
    check_int("seed", seed)
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise ImportError(
            'load_digits needs scikit-learn; install it with pip install "nos_ops[examples]"'
        ) from error
    bunch = sklearn_digits()
    grey = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    grey = F.interpolate(grey, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = grey.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    full = ImageSet(images, torch.as_tensor(bunch.target, dtype=torch.int64), 10, "digits")
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = round(0.6 * len(full)), round(0.2 * len(full))
    return (
        full.subset(order[:n_train]),
        full.subset(order[n_train : n_train + n_val]),
        full.subset(order[n_train + n_val :]),
    )


def split_for_search(
    dataset: ImageSet, fraction: float = 0.5, seed: int = 0
) -> tuple[ImageSet, ImageSet]:
    """(weight set, architecture set): a seeded random split of a training set for search.

    The weight set holds ``round(fraction * N)`` images (25K of CIFAR-10's 50K by default),
    the architecture set the rest; the two are disjoint.
    """
    check_probability("fraction", fraction)
    check_int("seed", seed)
    n_weight = round(fraction * len(dataset))
    if not 0.0 < fraction < 1.0 or not 0 < n_weight < len(dataset):
        raise ValueError(
            f"fraction={fraction!r} is not valid for {len(dataset)} images; expected a value "
            "in (0, 1) that leaves both halves non-empty"
        )
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return dataset.subset(order[:n_weight]), dataset.subset(order[n_weight:])


def channel_stats(
    dataset: ImageSet, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of the images scaled to [0, 1], as the CIFAR constants are."""
    check_positive("chunk", chunk)
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty; no statistics to compute")
    channels = dataset.images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(dataset), chunk):
        x = dataset.images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3)).cpu()
        squares += x.square().sum(dim=(0, 2, 3)).cpu()
    count = dataset.images.numel() // channels
    mean = total / count
    std = (squares / count - mean.square()).clamp_(min=0.0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def cifar_stats(num_classes: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The standard (mean, std) of CIFAR-10 (``num_classes=10``) or CIFAR-100 (100)."""
    if num_classes == 10:
        return CIFAR10_MEAN, CIFAR10_STD
    if num_classes == 100:
        return CIFAR100_MEAN, CIFAR100_STD
    raise ValueError(f"num_classes={num_classes!r} is not valid for CIFAR; expected 10 or 100")


# ---------------------------------------------------------------------------- augmentation


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x is a {type(x).__name__}; expected a tensor B x C x H x W")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-d batch B x C x H x W, got shape {tuple(x.shape)}")


def _randint(
    high: int, size: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``size`` ints in [0, high), drawn on the generator's device and moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.randint(high, (size,), generator=generator, device=source).to(device)


def random_crop(
    x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to H x W at a random offset per image: B x C x H x W.

    One gather for the whole batch; ``padding=0`` returns the images unchanged.
    """
    _check_batch(x)
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ValueError(f"padding={padding!r} is not valid; expected an int >= 0")
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding)).flatten(2)
    top = _randint(2 * padding + 1, b, generator, x.device)
    left = _randint(2 * padding + 1, b, generator, x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)
    cols = left[:, None] + torch.arange(w, device=x.device)
    index = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).flatten(1)
    return padded.gather(2, index[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


def random_flip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``: B x C x H x W."""
    _check_batch(x)
    check_probability("p", p, include_one=True)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p!r} is not valid; expected a probability in [0, 1]")
    source = generator.device if generator is not None else x.device
    flip = torch.rand(x.shape[0], generator=generator, device=source).to(x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def cutout(
    x: torch.Tensor, length: int = 16, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cutout (DeVries & Taylor): zero one ``length`` x ``length`` square per image.

    The centre is uniform over all H x W positions, so the square may be clipped by the
    border; rows ``cy - length // 2`` up to ``cy - length // 2 + length`` (the same square as
    the reference code for even lengths). B x C x H x W in, same out.
    """
    _check_batch(x)
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError(f"length={length!r} is not valid; expected an int >= 0")
    b, _, h, w = x.shape
    top = _randint(h, b, generator, x.device) - length // 2
    left = _randint(w, b, generator, x.device) - length // 2
    rows = torch.arange(h, device=x.device) - top[:, None]
    cols = torch.arange(w, device=x.device) - left[:, None]
    inside_rows = (rows >= 0) & (rows < length)
    inside_cols = (cols >= 0) & (cols < length)
    mask = inside_rows[:, :, None] & inside_cols[:, None, :]
    return x.masked_fill(mask[:, None], 0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 B x C x H x W -> float32 ``(x / 255 - mean) / std``, per channel."""
    _check_batch(x)
    if x.dtype != torch.uint8:
        raise ValueError(f"x has dtype {x.dtype}; expected uint8 images in 0..255")
    channels = x.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean={tuple(mean)} and std={tuple(std)} must have one value per channel ({channels})"
        )
    if min(std) <= 0:
        raise ValueError(f"std={tuple(std)} is not valid; expected positive values")
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.float().div_(255.0).sub_(m).div_(s)


class Augment:
    """uint8 batch -> normalised float32 batch: crop, flip, normalise, cutout (DARTS order).

    ``crop_padding=0``, ``flip=False`` and ``cutout_length=0`` switch the steps off, so
    ``Augment(mean, std, 0, False)`` is the evaluation transform. Cutout comes after
    normalisation as in the reference code, so the square is zero in normalised units.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 4,
        flip: bool = True,
        cutout_length: int = 0,
    ) -> None:
        check_bool("flip", flip)
        if not isinstance(crop_padding, int) or isinstance(crop_padding, bool) or crop_padding < 0:
            raise ValueError(f"crop_padding={crop_padding!r} is not valid; expected an int >= 0")
        if (
            not isinstance(cutout_length, int)
            or isinstance(cutout_length, bool)
            or (cutout_length < 0)
        ):
            raise ValueError(f"cutout_length={cutout_length!r} is not valid; expected an int >= 0")
        numbers = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (*mean, *std)
        )
        if not numbers or not mean or len(mean) != len(std) or min(std) <= 0:
            raise ValueError(
                f"mean={tuple(mean)} and std={tuple(std)} are not valid; expected one mean and "
                "one positive std per channel"
            )
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.crop_padding = crop_padding
        self.flip = flip
        self.cutout_length = cutout_length

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """B x C x H x W uint8 -> B x C x H x W float32; ``generator`` drives every draw."""
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            x = random_flip(x, generator=generator)
        x = normalize(x, self.mean, self.std)
        if self.cutout_length:
            x = cutout(x, self.cutout_length, generator)
        return x

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mean={self.mean}, std={self.std}, "
            f"crop_padding={self.crop_padding}, flip={self.flip}, "
            f"cutout_length={self.cutout_length})"
        )


# -------------------------------------------------------------------------------- loading


class TensorLoader:
    """Batches of an in-memory :class:`ImageSet`: yields (B x C x H x W float32, B int64).

    Each batch is indexed, moved to ``device`` and then augmented there by
    ``augment(images, generator=g)`` (e.g. :class:`Augment`); with ``augment=None`` the images
    are only scaled to [0, 1]. Like ``DistributedSampler``, the order is a permutation seeded
    by ``seed + epoch`` (call :meth:`set_epoch` each epoch), padded by wrap-around to a multiple
    of ``world_size`` and dealt out so that rank ``r`` takes every ``world_size``-th index from
    ``r``. Augmentation draws from a CPU generator seeded by (seed, epoch, rank), so the epoch
    alone fixes every batch: a resumed run reproduces, on any device.
    """

    def __init__(
        self,
        dataset: ImageSet,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Callable[..., torch.Tensor] | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(dataset, ImageSet):
            raise TypeError(
                f"dataset is a {type(dataset).__name__}; expected an ImageSet (images N x C x "
                "H x W uint8, labels N int64)"
            )
        if len(dataset) == 0:
            raise ValueError(f"dataset {dataset.name!r} is empty; expected at least one image")
        for name, value in (("batch_size", batch_size), ("world_size", world_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; expected an int >= 1")
        check_bool("shuffle", shuffle)
        check_bool("drop_last", drop_last)
        check_int("seed", seed)
        if augment is not None and not callable(augment):
            raise TypeError(f"augment={augment!r} is not callable; expected e.g. an Augment")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(
                f"rank={rank!r} is not valid; expected an int in [0, {world_size - 1}]"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.device = torch.device(device)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        if drop_last and self.num_samples < batch_size:
            raise ValueError(
                f"batch_size={batch_size} is larger than the {self.num_samples} images "
                f"{'each rank sees' if world_size > 1 else 'of'} dataset {dataset.name!r}: with "
                "drop_last=True an epoch would have no batch; use a smaller batch_size or "
                "drop_last=False"
            )

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch: ``ceil(N / world_size)``."""
        return math.ceil(len(self.dataset) / self.world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: it fixes the shuffle and the augmentation draws."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} is not valid; expected an int >= 0")
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_epoch(state["epoch"])

    def indices(self) -> torch.Tensor:
        """This rank's dataset indices for the current epoch, in order: ``num_samples`` long."""
        n = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        total = self.num_samples * self.world_size
        order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.indices()
        stop = len(self) * self.batch_size if self.drop_last else len(indices)
        mixed = (self.seed * 1_000_003 + self.epoch) * 1_000_003 + self.rank + 1
        generator = torch.Generator().manual_seed(mixed % 2**64)
        images, labels = self.dataset.images, self.dataset.labels
        for start in range(0, stop, self.batch_size):
            batch = indices[start : start + self.batch_size].to(images.device)
            x = images[batch].to(self.device, non_blocking=True)
            y = labels[batch].to(self.device, non_blocking=True)
            if self.augment is None:
                x = x.float().div_(255.0)
            else:
                x = self.augment(x, generator=generator)
            yield x, y

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.dataset.name!r}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, augment={self.augment!r}, "
            f"device={str(self.device)!r}, rank={self.rank}, world_size={self.world_size})"
        )
