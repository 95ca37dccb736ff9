"""``--data-dir`` / ``data_dir`` given an image folder (one subfolder per class, or train/ and
test/ each with them) for the teacher, the search and training (tiny: 1 epoch, 2 steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nos_ops.cli import main
from nos_ops.engine.data import is_image_folder, load_data, load_image_folder_sets
from nos_ops.search import SearchConfig

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--epochs", "1", "--max-steps-per-epoch", "2", "--image-size", "8"]
TINY += ["--batch-size", "4", "--no-progress", "--device", "cpu"]


def _folder(root: Path, per_class: int = 10) -> Path:
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (nos_ops[images])")
    generator = torch.Generator().manual_seed(0)
    for label, name in enumerate(("ant", "bee", "cat")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (12, 12, 3), generator=generator, dtype=torch.uint8)
            pixels[..., label] = 255  # a class colour
            Image.fromarray(pixels.numpy()).save(root / name / f"{i}.png")
    return root


def test_image_folders_are_told_from_cifar_and_split(tmp_path):
    root = _folder(tmp_path / "pets")
    assert is_image_folder(root) and not is_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert not is_image_folder(tmp_path / "empty")
    train, test, mean, std = load_data(root, 8)
    assert (len(train), len(test), train.num_classes) == (27, 3, 3)
    assert tuple(train.images.shape[1:]) == (3, 8, 8) and len(mean) == len(std) == 3
    whole, none = load_image_folder_sets(root, test=False)
    assert none is None and len(whole) == 30 and whole.images.shape[-1] == 32
    split = tmp_path / "split"
    _folder(split / "train", 4)
    _folder(split / "val", 2)
    train, test, _, _ = load_data(split)
    assert (len(train), len(test), test.num_classes) == (12, 6, 3)
    # image_size is refused only for CIFAR folders
    assert SearchConfig(data_dir=str(root), image_size=8, teacher=None).image_size == 8
    with pytest.raises(ValueError, match="image_size=8"):
        SearchConfig(data_dir=str(tmp_path / "missing"), image_size=8, teacher=None)


def test_teacher_search_train_on_an_image_folder(tmp_path):
    root = _folder(tmp_path / "pets")
    data = ["--data-dir", str(root)]
    teacher = tmp_path / "teacher"
    assert main(["teacher", *data, *TINY, "--arch", "resnet18", "--out", str(teacher)]) == 0
    assert json.loads((teacher / "result.json").read_text())["num_classes"] == 3
    search = tmp_path / "search"
    flags = ["--space", "darts", "--channels", "4", "--layers", "3", "--no-plots"]
    assert (
        main(
            [
                "search",
                *data,
                *TINY,
                *flags,
                "--teacher",
                str(teacher / "teacher.pt"),
                "--out",
                str(search),
            ]
        )
        == 0
    )
    assert (search / "genotype.json").is_file()
    train = tmp_path / "train"
    flags = ["--genotype", str(search / "genotype.json"), "--channels", "4", "--layers", "3"]
    tiny = ["--epochs", "1", "--image-size", "8", "--batch-size", "16", "--no-progress"]
    assert main(["train", *data, *tiny, *flags, "--device", "cpu", "--out", str(train)]) == 0
    assert (train / "network.pt").is_file()
