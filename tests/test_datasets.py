"""Your own data: image folders (Pillow) and map-style datasets as ImageSets."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from nos_ops.data import Augment, TensorLoader, channel_stats, split_for_search
from nos_ops.datasets import from_dataset, list_classes, load_image_folder


def _write_folder(root, Image) -> None:
    """cat: two RGB images (one wide, one tall); dog: one grey and one RGBA; plus noise files."""
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    (root / ".hidden").mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(root / "cat" / "a.png")
    Image.new("RGB", (10, 30), (0, 255, 0)).save(root / "cat" / "b.jpg")
    Image.new("L", (16, 16), 128).save(root / "dog" / "c.bmp")
    Image.new("RGBA", (8, 8), (0, 0, 255, 255)).save(root / "dog" / "d.PNG")
    (root / "dog" / "notes.txt").write_text("not an image")


def test_image_folder(tmp_path) -> None:
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (nos_ops[images])")
    _write_folder(tmp_path, Image)
    assert list_classes(tmp_path) == ["cat", "dog"]
    data = load_image_folder(tmp_path, image_size=12)
    assert data.images.shape == (4, 3, 12, 12) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 0, 1, 1] and data.num_classes == 2
    assert data.name == tmp_path.name
    assert data.images[0, :, 6, 6].tolist() == [255, 0, 0]  # red cat
    assert data.images[2, :, 6, 6].tolist() == [128, 128, 128]  # grey dog, as RGB
    grey = load_image_folder(tmp_path, image_size=(8, 10), channels=1, classes=["dog"])
    assert grey.images.shape == (2, 1, 8, 10) and grey.num_classes == 1


def test_image_folder_feeds_the_search_split_and_loader(tmp_path) -> None:
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (nos_ops[images])")
    _write_folder(tmp_path, Image)
    data = load_image_folder(tmp_path, image_size=16)
    weights, arch = split_for_search(data)
    assert len(weights) == len(arch) == 2
    mean, std = channel_stats(data)
    assert len(mean) == len(std) == 3
    augment = Augment(mean, std, crop_padding=2, flip=True)
    loader = TensorLoader(data, batch_size=2, shuffle=True, augment=augment, seed=0)
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, 16, 16) and images.is_floating_point()
    assert labels.shape == (2,)


def test_image_folder_errors(tmp_path) -> None:
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (nos_ops[images])")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class subfolders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_image_folder(tmp_path)
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="image_size=0 is not valid"):
        load_image_folder(tmp_path, image_size=0)
    with pytest.raises(ValueError, match="channels=2 is not valid"):
        load_image_folder(tmp_path, channels=2)
    del Image


def test_from_tensor_datasets() -> None:
    uint8 = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 1, 0])
    data = from_dataset(TensorDataset(uint8, labels), name="mine")
    assert torch.equal(data.images, uint8) and data.labels.tolist() == labels.tolist()
    assert data.num_classes == 3 and data.name == "mine"
    floats = from_dataset(TensorDataset(uint8.float() / 255, labels), num_classes=4)
    assert torch.equal(floats.images, uint8) and floats.num_classes == 4
    resized = from_dataset(TensorDataset(uint8, labels), image_size=4)
    assert resized.images.shape == (5, 3, 4, 4)


def test_from_a_list_of_mixed_sizes_and_pil_images() -> None:
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (nos_ops[images])")
    items = [
        (torch.rand(3, 10, 12), 0),
        (Image.new("RGB", (6, 6), (10, 20, 30)), torch.tensor(1)),
    ]
    data = from_dataset(items, image_size=(6, 6))
    assert data.images.shape == (2, 3, 6, 6)
    assert data.images[1, :, 0, 0].tolist() == [10, 20, 30]
    with pytest.raises(ValueError, match="pass image_size"):
        from_dataset(items)


def test_from_dataset_errors() -> None:
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        from_dataset([(torch.randn(3, 4, 4) * 10, 0)])
    with pytest.raises(ValueError, match="is not an integer label"):
        from_dataset([(torch.rand(3, 4, 4), 0.5)])
    with pytest.raises(TypeError, match="expected a C x H x W tensor or a PIL image"):
        from_dataset([("image.png", 0)])
    with pytest.raises(ValueError, match="dataset is empty"):
        from_dataset([])
    with pytest.raises(TypeError, match="expected a map-style dataset"):
        from_dataset(iter([]))
