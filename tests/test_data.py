"""CIFAR reader, digits, search split, batched augmentation and the tensor loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nos_ops.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    Augment,
    ImageSet,
    TensorLoader,
    channel_stats,
    cifar_stats,
    cutout,
    load_cifar,
    load_digits,
    normalize,
    random_crop,
    random_flip,
    split_for_search,
)

PER_BATCH = 10
ROWS = np.zeros((PER_BATCH, 3072), np.uint8)


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as file:
        pickle.dump(obj, file, protocol=2)


def _batch(rng: np.random.Generator, label_key: bytes, classes: int) -> dict[bytes, object]:
    """One batch in the layout of the official files (bytes keys, list labels)."""
    return {
        b"batch_label": b"training batch",
        label_key: [int(v) for v in rng.integers(0, classes, PER_BATCH)],
        b"data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(PER_BATCH)],
    }


def _write_cifar10(root: Path) -> dict[str, list[dict[bytes, object]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = [_batch(rng, b"labels", 10) for _ in range(5)]
    test = [_batch(rng, b"labels", 10)]
    for i, batch in enumerate(train, 1):
        _dump(folder / f"data_batch_{i}", batch)
    _dump(folder / "test_batch", test[0])
    names = [f"class{i}".encode() for i in range(10)]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": PER_BATCH})
    return {"train": train, "test": test}


def _write_cifar100(root: Path) -> dict[str, list[dict[bytes, object]]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    split = {name: [_batch(rng, b"fine_labels", 100)] for name in ("train", "test")}
    for name, (batch,) in split.items():
        batch[b"coarse_labels"] = [v // 5 for v in batch[b"fine_labels"]]
        _dump(folder / name, batch)
    names = [f"c{i}".encode() for i in range(100)]
    _dump(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": names[:20]})
    return split


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(
    ("writer", "name", "label_key", "classes"),
    [
        (_write_cifar10, "cifar10", b"labels", 10),
        (_write_cifar100, "cifar100", b"fine_labels", 100),
    ],
)
def test_load_cifar_round_trip(tmp_path, writer, name, label_key, classes, train):
    batches = writer(tmp_path)["train" if train else "test"]
    data = np.concatenate([b[b"data"] for b in batches])
    labels = np.concatenate([b[label_key] for b in batches])
    folder = next(tmp_path.iterdir())
    for root in (folder, tmp_path):  # the CIFAR folder itself or the folder holding it
        ds = load_cifar(root, train=train)
        assert (ds.name, ds.num_classes) == (name, classes)
        assert ds.images.shape == (len(data), 3, 32, 32) and ds.images.dtype == torch.uint8
        assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
        # Row layout: R plane, then G, then B, each 32 x 32 row-major.
        for i, c, y, x in [(0, 0, 0, 0), (1, 0, 0, 31), (2, 1, 5, 7), (len(data) - 1, 2, 31, 31)]:
            assert ds.images[i, c, y, x] == data[i, c * 1024 + y * 32 + x]
        assert torch.equal(ds.images.flatten(1), torch.from_numpy(data))
        image, label = ds[3]
        assert image.shape == (3, 32, 32) and int(label) == labels[3]


def test_load_cifar_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_cifar(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar(tmp_path)  # an empty folder
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar(tmp_path)
    assert len(load_cifar(tmp_path, train=False)) == PER_BATCH
    _write_cifar100(tmp_path)
    with pytest.raises(ValueError, match="both"):
        load_cifar(tmp_path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not a pickle", "not a readable"),
        ([1, 2, 3], "expected a dict"),
        ({b"data": ROWS}, "lacks the keys"),
        ({b"data": ROWS[:, :3000], b"labels": [0] * PER_BATCH}, "3072"),
        ({b"data": ROWS.astype(np.float32), b"labels": [0] * PER_BATCH}, "uint8"),
        ({b"data": ROWS, b"labels": [0] * 3}, "integer labels"),
        ({b"data": ROWS, b"labels": [10] * PER_BATCH}, r"\[0, 9\]"),
    ],
)
def test_load_cifar_malformed(tmp_path, content, match):
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _dump(path, content)
    with pytest.raises(ValueError, match=match) as info:
        load_cifar(tmp_path, train=False)
    assert "test_batch" in str(info.value)


class _Payload:
    """A pickle that would create a file when loaded by a plain unpickler."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_load_cifar_runs_no_code(tmp_path):
    _write_cifar10(tmp_path)
    marker = tmp_path / "marker"
    _dump(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": _Payload(marker)})
    with pytest.raises(ValueError, match="not allowed"):
        load_cifar(tmp_path, train=False)
    assert not marker.exists()


def test_load_cifar_other_pickle_protocols(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for name, protocol in (("train", 4), ("test", 5)):
        with (folder / name).open("wb") as file:
            pickle.dump({"data": data, "fine_labels": np.array([3, 99])}, file, protocol=protocol)
        ds = load_cifar(tmp_path, train=name == "train")
        assert torch.equal(ds.images.flatten(1), torch.from_numpy(data))
        assert ds.labels.tolist() == [3, 99] and ds.num_classes == 100


def test_imageset_checks():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(images.float(), torch.zeros(4, dtype=torch.int64), 10, "x")
    with pytest.raises(ValueError, match="int64"):
        ImageSet(images, torch.zeros(3, dtype=torch.int64), 10, "x")
    with pytest.raises(ValueError, match="num_classes=10"):
        ImageSet(images, torch.full((4,), 10), 10, "x")


def test_load_digits():
    train, val, test = load_digits()
    assert [len(s) for s in (train, val, test)] == [1078, 359, 360]
    for s in (train, val, test):
        assert s.images.shape[1:] == (3, 32, 32) and s.images.dtype == torch.uint8
        assert s.labels.dtype == torch.int64 and (s.num_classes, s.name) == (10, "digits")
        assert torch.equal(s.images[:, 0], s.images[:, 1])
        assert torch.equal(s.images[:, 0], s.images[:, 2])
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    again = load_digits()
    assert all(torch.equal(a.images, b.images) for a, b in zip((train, val, test), again))
    assert not torch.equal(load_digits(seed=1)[0].labels, train.labels)


def test_load_digits_is_a_partition():
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    full = np.round(bunch.images * (255 / 16)).astype(np.uint8).reshape(len(bunch.images), 64)
    expected = sorted(map(tuple, np.column_stack([full, bunch.target]).tolist()))
    rows = []
    for s in load_digits(image_size=8):
        rows += np.column_stack([s.images[:, 0].flatten(1).numpy(), s.labels.numpy()]).tolist()
    assert sorted(map(tuple, rows)) == expected
    assert load_digits(image_size=12)[0].images.shape[2:] == (12, 12)
    with pytest.raises(ValueError, match="image_size=0"):
        load_digits(image_size=0)


def _indexed(n: int) -> ImageSet:
    """n images whose pixels and label both equal the image's index."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return ImageSet(images, torch.arange(n), n, "indexed")


def test_split_for_search():
    weight, arch = split_for_search(_indexed(50))
    assert (len(weight), len(arch)) == (25, 25)
    ids_w, ids_a = set(weight.labels.tolist()), set(arch.labels.tolist())
    assert not ids_w & ids_a and ids_w | ids_a == set(range(50))
    assert torch.equal(weight.images[:, 0, 0, 0].long(), weight.labels)
    assert torch.equal(split_for_search(_indexed(50))[0].labels, weight.labels)
    assert not torch.equal(split_for_search(_indexed(50), seed=1)[0].labels, weight.labels)
    assert len(split_for_search(_indexed(50), fraction=0.2)[0]) == 10
    for fraction in (0.0, 1.0, 0.01):
        with pytest.raises(ValueError, match="fraction"):
            split_for_search(_indexed(50), fraction=fraction)


def test_channel_stats():
    images = torch.randint(0, 256, (7, 3, 5, 6), dtype=torch.uint8)
    mean, std = channel_stats(ImageSet(images, torch.zeros(7, dtype=torch.int64), 1, "x"), chunk=3)
    x = images.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)))
    expected_std = x.std(dim=(0, 2, 3), correction=0)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), expected_std)
    for values in (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD):
        assert len(values) == 3 and all(0 < v < 1 for v in values)


def test_cifar_stats_pick_the_constants_by_class_count():
    assert cifar_stats(10) == (CIFAR10_MEAN, CIFAR10_STD)
    assert cifar_stats(100) == (CIFAR100_MEAN, CIFAR100_STD)
    with pytest.raises(ValueError, match=r"num_classes=20 .*expected 10 or 100"):
        cifar_stats(20)


batches = st.integers(1, 5)
sides = st.integers(1, 12)


@settings(max_examples=25, deadline=None)
@example(b=1, h=1, w=1, padding=4, seed=0)
@given(b=batches, h=sides, w=sides, padding=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_random_crop_is_a_window_of_the_padded_batch(b, h, w, padding, seed):
    x = torch.randint(1, 256, (b, 2, h, w), dtype=torch.uint8)
    out = random_crop(x, padding, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    offsets = range(2 * padding + 1)
    for i in range(b):
        windows = [padded[i, :, t : t + h, s : s + w] for t in offsets for s in offsets]
        assert any(torch.equal(out[i], window) for window in windows)
    assert torch.equal(random_crop(x, 0), x)


def test_random_crop_moves_and_is_seeded():
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, random_crop(x, 4, torch.Generator().manual_seed(0)))
    assert (out == 0).any() and not torch.equal(out, x)
    with pytest.raises(ValueError, match="padding=-1"):
        random_crop(x, -1)
    with pytest.raises(ValueError, match="4-d"):
        random_crop(x[0])


@settings(max_examples=20, deadline=None)
@example(b=1, h=3, w=5, seed=0)
@given(b=batches, h=sides, w=sides, seed=st.integers(0, 2**16))
def test_random_flip(b, h, w, seed):
    x = torch.randn(b, 3, h, w)
    assert torch.equal(random_flip(x, p=1.0), x.flip(-1))
    assert torch.equal(random_flip(x, p=0.0), x)
    out = random_flip(x, generator=torch.Generator().manual_seed(seed))
    for i in range(b):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    # exact mirror of column order
    assert torch.equal(random_flip(x, p=1.0)[..., 0], x[..., -1])


def _zero_box(image: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the zeros in a C x H x W image, checked to be a box."""
    zero = (image == 0).all(0)
    if not zero.any():
        return None
    rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    assert zero[top:bottom, left:right].all() and int(zero.sum()) == (bottom - top) * (right - left)
    return top, bottom, left, right


@settings(max_examples=20, deadline=None)
@example(b=1, h=1, w=1, length=1, seed=0)
@given(b=batches, h=sides, w=sides, length=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_cutout_zeroes_one_clipped_square(b, h, w, length, seed):
    x = torch.randint(1, 256, (b, 3, h, w), dtype=torch.uint8)
    out = cutout(x, length, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(b):
        box = _zero_box(out[i])
        assert box is not None  # the centre is always inside, so something is cut
        top, bottom, left, right = box
        assert bottom - top == length or top == 0 or bottom == h
        assert right - left == length or left == 0 or right == w
        assert bottom - top <= length and right - left <= length
        keep = (out[i] != 0).all(0)
        assert torch.equal(out[i][:, keep], x[i][:, keep])


def test_cutout_full_square_when_inside():
    x = torch.randn(64, 3, 64, 64).abs() + 0.1
    out = cutout(x, 16, torch.Generator().manual_seed(0))
    sizes = []
    for i in range(64):
        top, bottom, left, right = _zero_box(out[i])
        sizes.append((bottom - top, right - left))
        if 8 <= top and bottom <= 56 and 8 <= left and right <= 56:
            assert (bottom - top, right - left) == (16, 16)
    assert sizes.count((16, 16)) > 20
    assert torch.equal(cutout(x, 0), x)
    with pytest.raises(ValueError, match="length=-2"):
        cutout(x, -2)


def test_normalize():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out = normalize(x, CIFAR10_MEAN, CIFAR10_STD)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert out.dtype == torch.float32
    assert torch.allclose(out, (x.float() / 255 - mean) / std)
    with pytest.raises(ValueError, match="uint8"):
        normalize(x.float(), CIFAR10_MEAN, CIFAR10_STD)
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(x, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="positive"):
        normalize(x, CIFAR10_MEAN, (0.2, 0.0, 0.2))


@settings(max_examples=15, deadline=None)
@example(b=1, size=1)
@given(b=batches, size=st.integers(1, 16))
def test_augment(b, size):
    x = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
    augment = Augment(CIFAR10_MEAN, CIFAR10_STD, crop_padding=2, cutout_length=4)
    out = augment(x, generator=torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out, augment(x, generator=torch.Generator().manual_seed(3)))
    plain = Augment(CIFAR10_MEAN, CIFAR10_STD, crop_padding=0, flip=False)
    assert torch.equal(plain(x), normalize(x, CIFAR10_MEAN, CIFAR10_STD))


def test_augment_checks():
    assert "cutout_length=16" in repr(Augment(CIFAR10_MEAN, CIFAR10_STD, cutout_length=16))
    with pytest.raises(ValueError, match="crop_padding=-1"):
        Augment(CIFAR10_MEAN, CIFAR10_STD, crop_padding=-1)
    with pytest.raises(ValueError, match="cutout_length=-1"):
        Augment(CIFAR10_MEAN, CIFAR10_STD, cutout_length=-1)
    with pytest.raises(ValueError, match="std"):
        Augment(CIFAR10_MEAN, (0.2, 0.2))


def _seen(loader: TensorLoader) -> list[int]:
    ids = []
    for images, labels in loader:
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert torch.equal((images[:, 0, 0, 0] * 255).round().long(), labels)
        ids += labels.tolist()
    return ids


@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_covers_every_sample_once(shuffle):
    loader = TensorLoader(_indexed(37), batch_size=8, shuffle=shuffle)
    assert len(loader) == 5 and loader.num_samples == 37
    ids = _seen(loader)
    assert sorted(ids) == list(range(37))
    assert (ids == list(range(37))) != shuffle
    last = TensorLoader(_indexed(37), batch_size=8, shuffle=shuffle, drop_last=True)
    assert len(last) == 4 and len(_seen(last)) == 32


@pytest.mark.parametrize("n", [36, 37])
def test_loader_shards_across_ranks(n):
    shards = []
    for rank in range(2):
        loader = TensorLoader(_indexed(n), 5, shuffle=True, seed=4, rank=rank, world_size=2)
        loader.set_epoch(3)
        assert loader.num_samples == (19 if n == 37 else 18)
        shards.append(_seen(loader))
    assert len(shards[0]) == len(shards[1]) == -(-n // 2)
    assert set(shards[0]) | set(shards[1]) == set(range(n))
    assert len(shards[0]) + len(shards[1]) - len(set(shards[0]) | set(shards[1])) == n % 2


def test_loader_epochs_are_deterministic():
    augment = Augment((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_padding=1, cutout_length=2)
    loader = TensorLoader(_indexed(30), 7, shuffle=True, augment=augment, seed=1)
    first = list(loader)
    loader.set_epoch(1)
    second = list(loader)
    assert not torch.equal(first[0][1], second[0][1])
    resumed = TensorLoader(_indexed(30), 7, shuffle=True, augment=augment, seed=1)
    resumed.load_state_dict(loader.state_dict())
    assert loader.state_dict() == {"epoch": 1}
    for (x, y), (x2, y2) in zip(second, resumed, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    resumed.set_epoch(0)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, resumed, strict=True))


def test_loader_checks():
    with pytest.raises(ValueError, match="batch_size=0"):
        TensorLoader(_indexed(4), 0)
    with pytest.raises(ValueError, match="rank=2"):
        TensorLoader(_indexed(4), 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="epoch=-1"):
        TensorLoader(_indexed(4), 2).set_epoch(-1)
    assert "batch_size=2" in repr(TensorLoader(_indexed(4), 2))
