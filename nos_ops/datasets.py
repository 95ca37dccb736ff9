"""Your own data (Sec. 4.1 uses CIFAR; any labelled images work): an image folder or any
map-style ``Dataset`` as an :class:`~nos_ops.data.ImageSet`.

* :func:`load_image_folder` reads ``root/<class name>/<image files>`` (one subfolder per
  class, torchvision's ``ImageFolder`` layout) with Pillow (the optional extra
  ``nos_ops[images]``); classes are the subfolder names in sorted order
  (:func:`list_classes`).
* :func:`from_dataset` converts a map-style ``torch.utils.data.Dataset`` of
  ``(image, label)`` pairs (C x H x W tensors, uint8 or float in [0, 1], or PIL images).

Both give N x C x S x S uint8 images in memory, like :func:`~nos_ops.data.load_cifar`, so the
search split (:func:`~nos_ops.data.split_for_search`), augmentation
(:class:`~nos_ops.data.Augment`), normalisation statistics
(:func:`~nos_ops.data.channel_stats`) and :class:`~nos_ops.data.TensorLoader` apply as they
are. In memory means data sets of up to a few GB at the chosen size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .data import ImageSet

__all__ = ["IMAGE_EXTENSIONS", "list_classes", "load_image_folder", "from_dataset"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
"""File endings read as images (case-insensitive); other files are ignored."""


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, Sequence) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        size = None
    if size is None or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in size):
        raise ValueError(
            f"image_size={image_size!r} is not valid; expected an int >= 1 or (height, width)"
        )
    return size  # type: ignore[return-value]


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError(
            'reading image files needs Pillow: pip install "nos_ops[images]"'
        ) from err
    return Image


def list_classes(root: str | os.PathLike) -> list[str]:
    """The class names of an image folder: its subfolders (hidden ones skipped), sorted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"root={str(root)!r} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(
            f"{root} has no class subfolders; expected root/<class name>/<image files>"
        )
    return classes


def _resize_crop(image: Any, size: tuple[int, int], Image: Any) -> Any:
    """Resize so the image covers ``size`` (aspect kept), then crop the centre."""
    height, width = size
    scale = max(height / image.height, width / image.width)
    new = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if new != (image.width, image.height):
        image = image.resize(new, Image.BILINEAR)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def _to_tensor(image: Any, channels: int) -> torch.Tensor:
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, channels).permute(2, 0, 1)


def load_image_folder(
    root: str | os.PathLike,
    image_size: int | Sequence[int] = 32,
    channels: int = 3,
    classes: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageSet:
    """An image folder as an :class:`~nos_ops.data.ImageSet` of N x C x H x W uint8 images.

    Args:
        root: a folder with one subfolder per class (``root/cat/1.jpg``, ``root/dog/2.png``).
        image_size: output size, an int or ``(height, width)``. Each image is resized so it
            covers that size (aspect ratio kept) and cropped at the centre.
        channels: 3 (RGB) or 1 (grey); images are converted.
        classes: the class subfolders to read, in label order (default :func:`list_classes`).
        name: the set's name (default the folder's name).

    Returns:
        The images in class order, then file-name order; label i is ``classes[i]``.
    """
    Image = _pillow()
    size = _size(image_size)
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r} is not valid; expected 1 (grey) or 3 (RGB)")
    root = Path(root).expanduser()
    classes = list_classes(root) if classes is None else list(classes)
    images, labels = [], []
    for label, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            raise FileNotFoundError(f"class {cls!r} has no folder {folder}")
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                with Image.open(path) as image:
                    image = image.convert("RGB" if channels == 3 else "L")
            except OSError as err:
                raise ValueError(f"{path} is not a readable image: {err}") from None
            images.append(_to_tensor(_resize_crop(image, size, Image), channels))
            labels.append(label)
    if not images:
        raise ValueError(
            f"{root} holds no images with endings {', '.join(IMAGE_EXTENSIONS)} in its class "
            f"folders {classes}"
        )
    return ImageSet(
        torch.stack(images),
        torch.tensor(labels, dtype=torch.int64),
        len(classes),
        name if name is not None else root.name,
    )


def _image_tensor(image: Any, index: int) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        if hasattr(image, "convert") and hasattr(image, "tobytes"):  # a PIL image
            image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
            return _to_tensor(image, 3 if image.mode == "RGB" else 1)
        raise TypeError(
            f"dataset[{index}][0] is a {type(image).__name__}; expected a C x H x W tensor "
            "or a PIL image"
        )
    if image.dim() == 2:
        image = image.unsqueeze(0)
    if image.dim() != 3:
        raise ValueError(f"dataset[{index}][0] has shape {tuple(image.shape)}; expected C x H x W")
    if image.dtype == torch.uint8:
        return image
    if not image.is_floating_point():
        raise ValueError(
            f"dataset[{index}][0] has dtype {image.dtype}; expected uint8 or float in [0, 1]"
        )
    if image.numel() and (image.min() < 0 or image.max() > 1):
        raise ValueError(
            f"dataset[{index}][0] is a float image with values in [{float(image.min()):.3g}, "
            f"{float(image.max()):.3g}]; expected [0, 1] (pass images before normalisation)"
        )
    return image.mul(255).round_().to(torch.uint8)


def from_dataset(
    dataset: Any,
    image_size: int | Sequence[int] | None = None,
    num_classes: int | None = None,
    name: str = "dataset",
) -> ImageSet:
    """A map-style dataset of ``(image, label)`` pairs as an :class:`~nos_ops.data.ImageSet`.

    Args:
        dataset: anything with ``len()`` and ``dataset[i] -> (image, label)``: an image is a
            C x H x W (or H x W) tensor, uint8 or float in [0, 1], or a PIL image; a label an
            int or a 0-d integer tensor.
        image_size: resize every image to this size (bilinear, antialiased); None keeps the
            size, which must then be the same for all images.
        num_classes: the number of classes (default: the largest label + 1).
        name: the set's name.
    """
    size = None if image_size is None else _size(image_size)
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(
            f"dataset is a {type(dataset).__name__}; expected a map-style dataset "
            "(len() and dataset[i])"
        )
    images, labels = [], []
    for index in range(len(dataset)):
        item = dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"dataset[{index}] is not an (image, label) pair")
        image = _image_tensor(item[0], index)
        if size is not None and tuple(image.shape[-2:]) != size:
            x = image.unsqueeze(0).float()
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            image = x.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)
        if images and image.shape != images[0].shape:
            raise ValueError(
                f"dataset[{index}][0] has shape {tuple(image.shape)} but dataset[0][0] has "
                f"{tuple(images[0].shape)}; pass image_size to resize them to one size"
            )
        label = item[1]
        if isinstance(label, torch.Tensor):
            if label.numel() != 1 or label.is_floating_point():
                raise ValueError(f"dataset[{index}][1] is not an integer label: {label!r}")
            label = int(label)
        if not isinstance(label, int) or isinstance(label, bool):
            raise ValueError(f"dataset[{index}][1]={label!r} is not an integer label")
        images.append(image)
        labels.append(label)
    if not images:
        raise ValueError("dataset is empty")
    labels_t = torch.tensor(labels, dtype=torch.int64)
    if num_classes is None:
        num_classes = int(labels_t.max()) + 1
    return ImageSet(torch.stack(images).contiguous(), labels_t, num_classes, name)
