"""Bad input to spaces, cells, networks, data and profiling: clear errors, never silence.

Each case asserts the exception type and that the message names the argument and value.
Batch 0: DARTS-space networks take it (an empty batch of logits).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nos_ops.cell import Cell, SearchCell
from nos_ops.data import (
    Augment,
    ImageSet,
    TensorLoader,
    channel_stats,
    cutout,
    load_cifar,
    load_digits,
    normalize,
    random_crop,
    random_flip,
    split_for_search,
)
from nos_ops.genotype import DARTS_V2
from nos_ops.models import NetworkCIFAR, NetworkImageNet, SearchNetwork, reduction_layers
from nos_ops.profile import count_macs, count_params, measure_latency, peak_memory, profile_module
from nos_ops.space import SearchSpace, get_space

pytestmark = pytest.mark.usefixtures("single_thread")


def _raises(build, error, match):
    with pytest.raises(error, match=match):
        build()


# ---------------------------------------------------------------------------- spaces

SPACE_CASES = {
    "ops a string": (
        lambda: SearchSpace("s", "sep_conv_3x3"),
        TypeError,
        r"ops='sep_conv_3x3' is a string",
    ),
    "ops None": (lambda: SearchSpace("s", None), TypeError, r"ops=None is not valid"),
    "ops a set": (
        lambda: SearchSpace("s", {"identity"}),
        TypeError,
        r"ops=\{'identity'\} is not valid",
    ),
    "ops ints": (lambda: SearchSpace("s", ("identity", 3)), TypeError, r"non-string entries \[3\]"),
    "ops empty": (lambda: SearchSpace("s", ()), ValueError, r"ops must name at least one"),
    "ops duplicates": (
        lambda: SearchSpace("s", ("identity", "sep_conv_3x3", "identity")),
        ValueError,
        r"ops has duplicates: .* names \['identity'\] more than once",
    ),
    "ops unknown": (
        lambda: SearchSpace("s", ("identity", "conv_9x9")),
        KeyError,
        r"name='conv_9x9'",
    ),
    "only none": (
        lambda: SearchSpace("s", ("none",)),
        ValueError,
        r"needs at least one feature op",
    ),
    "steps 0": (
        lambda: SearchSpace("s", ("identity",), steps=0),
        ValueError,
        r"steps=0 is not valid",
    ),
    "steps float": (lambda: SearchSpace("s", ("identity",), steps=2.0), ValueError, r"steps=2.0"),
    "steps bool": (lambda: SearchSpace("s", ("identity",), steps=True), ValueError, r"steps=True"),
    "steps str": (lambda: SearchSpace("s", ("identity",), steps="4"), ValueError, r"steps='4'"),
    "two_tier str": (
        lambda: SearchSpace("s", ("identity",), two_tier="no"),
        TypeError,
        r"two_tier='no'",
    ),
    "name empty": (lambda: SearchSpace("", ("identity",)), ValueError, r"name='' is not valid"),
    "name int": (lambda: SearchSpace(3, ("identity",)), ValueError, r"name=3 is not valid"),
    "get_space int": (
        lambda: get_space(3),
        TypeError,
        r"space=3 is not valid; expected a SearchSpace",
    ),
    "get_space None": (lambda: get_space(None), TypeError, r"space=None is not valid"),
    "get_space unknown": (lambda: get_space("nas"), KeyError, r"unknown space='nas'; presets: nos"),
}


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_bad_spaces(case):
    _raises(*SPACE_CASES[case])


def test_a_list_of_ops_is_taken_as_a_tuple():
    assert SearchSpace("s", ["identity", "sep_conv_3x3"]).ops == ("identity", "sep_conv_3x3")


# ----------------------------------------------------------------------------- cells

GENE = DARTS_V2.normal
CELL_CASES = {
    "search prev_prev 0": (
        lambda: SearchCell("darts", 0, 8, 8, False, False),
        ValueError,
        "prev_prev=0",
    ),
    "search prev -1": (lambda: SearchCell("darts", 8, -1, 8, False, False), ValueError, "prev=-1"),
    "search channels 0": (
        lambda: SearchCell("darts", 8, 8, 0, False, False),
        ValueError,
        "channels=0",
    ),
    "search reduction str": (
        lambda: SearchCell("darts", 8, 8, 8, "no", False),
        TypeError,
        "reduction='no'",
    ),
    "search reduction_prev 1": (
        lambda: SearchCell("darts", 8, 8, 8, False, 1),
        TypeError,
        "reduction_prev=1",
    ),
    "search odd after reduction": (
        lambda: SearchCell("darts", 8, 8, 5, False, True),
        ValueError,
        r"channels=5 .*even",
    ),
    "search space int": (lambda: SearchCell(3, 8, 8, 8, False, False), TypeError, "space=3"),
    "cell gene dict": (
        lambda: Cell({"blocks": []}, 8, 8, 8, False, False),
        TypeError,
        "gene=.* CellGene",
    ),
    "cell channels float": (
        lambda: Cell(GENE, 8, 8, 8.0, False, False),
        ValueError,
        "channels=8.0",
    ),
    "cell prev 0": (lambda: Cell(GENE, 8, 0, 8, False, False), ValueError, "prev=0"),
    "cell reduction None": (lambda: Cell(GENE, 8, 8, 8, None, False), TypeError, "reduction=None"),
    "cell odd after reduction": (
        lambda: Cell(GENE, 8, 8, 7, False, True),
        ValueError,
        r"channels=7 .*even",
    ),
}


@pytest.mark.parametrize("case", sorted(CELL_CASES))
def test_bad_cells(case):
    _raises(*CELL_CASES[case])


@pytest.mark.parametrize("drop_prob", [1.0, 1.5, -0.1, float("nan"), "0.2", None])
def test_cell_refuses_bad_drop_prob(drop_prob):
    cell = Cell(GENE, 4, 4, 4, False, False).train()
    x = torch.randn(2, 4, 6, 6)
    with pytest.raises(ValueError, match=r"drop_prob=.* is not valid"):
        cell(x, x, drop_prob)


# -------------------------------------------------------------------------- networks

CIFAR = {"channels": 4, "num_classes": 10, "layers": 3, "genotype": "DARTS_V2"}
NETWORK_CASES = {
    "layers 0": ({"layers": 0}, ValueError, r"layers=0 is not valid"),
    "layers 1": ({"layers": 1}, ValueError, r"layers=1 is not valid; expected >= 3"),
    "layers 2": ({"layers": 2}, ValueError, r"layers=2 is not valid; expected >= 3"),
    "layers -1": ({"layers": -1}, ValueError, r"layers=-1"),
    "layers float": ({"layers": 8.0}, ValueError, r"layers=8.0"),
    "channels 0": ({"channels": 0}, ValueError, r"channels=0"),
    "channels str": ({"channels": "16"}, ValueError, r"channels='16'"),
    "num_classes 0": ({"num_classes": 0}, ValueError, r"num_classes=0"),
    "num_classes bool": ({"num_classes": True}, ValueError, r"num_classes=True"),
    "drop_path 1.0": ({"drop_path_prob": 1.0}, ValueError, r"drop_path_prob=1.0 .*\[0, 1\)"),
    "drop_path -0.1": ({"drop_path_prob": -0.1}, ValueError, r"drop_path_prob=-0.1"),
    "drop_path nan": ({"drop_path_prob": float("nan")}, ValueError, r"drop_path_prob=nan"),
    "drop_path str": ({"drop_path_prob": "0.2"}, ValueError, r"drop_path_prob='0.2'"),
    "auxiliary str": ({"auxiliary": "yes"}, TypeError, r"auxiliary='yes'"),
    "genotype int": ({"genotype": 3}, TypeError, r"genotype=3 is not valid"),
    "genotype unknown": ({"genotype": "DARTS_V9"}, ValueError, r"genotype='DARTS_V9' is neither"),
}


@pytest.mark.parametrize("network", [NetworkCIFAR, NetworkImageNet])
@pytest.mark.parametrize("case", sorted(NETWORK_CASES))
def test_bad_network_arguments(network, case):
    change, error, match = NETWORK_CASES[case]
    with torch.device("meta"), pytest.raises(error, match=match):
        network(**(CIFAR | change))


def test_cifar_stem_multiplier_and_imagenet_channels():
    _raises(lambda: NetworkCIFAR(**CIFAR, stem_multiplier=0), ValueError, r"stem_multiplier=0")
    imagenet = CIFAR | {"channels": 1}
    _raises(lambda: NetworkImageNet(**imagenet), ValueError, r"channels=1 .*>= 2")


@pytest.mark.parametrize("value", [1.0, 2, -0.5, float("inf"), "0.1", None])
def test_setting_drop_path_prob_is_checked(value):
    with torch.device("meta"):
        net = NetworkCIFAR(**CIFAR)
    with pytest.raises(ValueError, match=r"drop_path_prob=.* is not valid"):
        net.drop_path_prob = value
    net.drop_path_prob = 0.3
    assert net.drop_path_prob == 0.3


@pytest.fixture(scope="module")
def cifar_net():
    torch.manual_seed(0)
    return NetworkCIFAR(**CIFAR, auxiliary=True)


@pytest.mark.parametrize("size", [16, 24, 48, 64])
def test_auxiliary_head_on_other_sizes_explains_itself(cifar_net, size):
    cifar_net.train()
    with pytest.raises(ValueError, match=r"AuxiliaryHeadCIFAR got .* features.*auxiliary=False"):
        cifar_net(torch.randn(2, 3, size, size))


@pytest.mark.parametrize("size", [16, 24])
def test_without_the_auxiliary_head_other_sizes_work(cifar_net, size):
    cifar_net.eval()  # the head runs in training only
    with torch.no_grad():
        logits, aux = cifar_net(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 10) and aux is None


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.randn(2, 1, 32, 32), ValueError, r"NetworkCIFAR: x has 1 channels"),
        (torch.randn(2, 4, 32, 32), ValueError, r"NetworkCIFAR: x has 4 channels"),
        (torch.randn(3, 32, 32), ValueError, r"NetworkCIFAR: x must be a 4-d tensor"),
        (torch.randn(2, 3, 32, 32, dtype=torch.float64), TypeError, r"float64.*double\(\)"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), TypeError, r"x is torch.uint8.*/ 255"),
        (None, TypeError, r"x must be a tensor"),
    ],
    ids=["1 channel", "4 channels", "3-d", "float64", "uint8", "None"],
)
def test_network_forward_checks(cifar_net, x, error, match):
    with pytest.raises(error, match=match):
        cifar_net(x)


def test_network_works_under_autocast(cifar_net):
    cifar_net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = cifar_net(torch.randn(2, 3, 32, 32))
    assert logits.dtype == torch.bfloat16


@pytest.mark.parametrize("train", [True, False])
def test_darts_network_takes_batch_zero(cifar_net, train):
    cifar_net.train(train)
    logits, aux = cifar_net(torch.randn(0, 3, 32, 32))
    assert logits.shape == (0, 10)
    assert (aux is None) != train


SEARCH_CASES = {
    "layers 2": ({"layers": 2}, ValueError, r"layers=2 is not valid"),
    "layers float": ({"layers": 5.0}, ValueError, r"layers=5.0"),
    "channels 0": ({"channels": 0}, ValueError, r"channels=0"),
    "num_classes -1": ({"num_classes": -1}, ValueError, r"num_classes=-1"),
    "stem 0": ({"stem_multiplier": 0}, ValueError, r"stem_multiplier=0"),
    "arch std nan": ({"arch_init_std": float("nan")}, ValueError, r"arch_init_std=nan"),
    "arch std negative": ({"arch_init_std": -1.0}, ValueError, r"arch_init_std=-1.0 .*>= 0"),
    "arch std str": ({"arch_init_std": "1e-3"}, ValueError, r"arch_init_std='1e-3'"),
    "partial 0": ({"partial_channels": 0}, ValueError, r"partial_channels=0"),
    "partial not a divisor": ({"partial_channels": 3}, ValueError, r"partial_channels=3"),
    "edge norm str": ({"edge_normalization": "yes"}, TypeError, r"edge_normalization='yes'"),
    "space int": ({"space": 5}, TypeError, r"space=5 is not valid"),
    "space unknown": ({"space": "dartz"}, KeyError, r"unknown space='dartz'"),
}


@pytest.mark.parametrize("case", sorted(SEARCH_CASES))
def test_bad_search_network_arguments(case):
    change, error, match = SEARCH_CASES[case]
    args = {"channels": 4, "num_classes": 10, "layers": 3, "space": "darts"} | change
    with torch.device("meta"), pytest.raises(error, match=match):
        SearchNetwork(**args)


def test_search_network_forward_checks_and_batch_zero():
    net = SearchNetwork(4, 10, 3, "darts")
    with pytest.raises(ValueError, match=r"SearchNetwork: x has 1 channels"):
        net(torch.randn(2, 1, 8, 8))
    with pytest.raises(TypeError, match=r"SearchNetwork has torch.float32 parameters"):
        net(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert net(torch.randn(0, 3, 8, 8)).shape == (0, 10)


@pytest.mark.parametrize("layers", [0, 1, 2, -3, 3.0])
def test_reduction_layers_needs_three_layers(layers):
    with pytest.raises(ValueError, match=rf"layers={layers!r} is not valid"):
        reduction_layers(layers)


# ------------------------------------------------------------------------------ data


def _images(n: int = 6, size: int = 8) -> ImageSet:
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 3, 3, "tiny")


U8 = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
DATA_CASES = {
    "images numpy": (
        lambda: ImageSet(U8.numpy(), torch.zeros(4, dtype=torch.int64), 3, "n"),
        TypeError,
        r"images is a ndarray; expected a torch tensor",
    ),
    "labels list": (lambda: ImageSet(U8, [0, 1, 2, 0], 3, "n"), TypeError, r"labels is a list"),
    "images float": (
        lambda: ImageSet(U8.float(), torch.zeros(4, dtype=torch.int64), 3, "n"),
        ValueError,
        r"images must be a uint8 tensor",
    ),
    "labels int32": (
        lambda: ImageSet(U8, torch.zeros(4, dtype=torch.int32), 3, "n"),
        ValueError,
        r"labels must be an int64 tensor of shape \(4,\)",
    ),
    "labels too few": (
        lambda: ImageSet(U8, torch.zeros(3, dtype=torch.int64), 3, "n"),
        ValueError,
        r"labels must be an int64 tensor of shape \(4,\)",
    ),
    "num_classes 0": (
        lambda: ImageSet(U8, torch.zeros(4, dtype=torch.int64), 0, "n"),
        ValueError,
        r"num_classes=0",
    ),
    "num_classes bool": (
        lambda: ImageSet(U8, torch.zeros(4, dtype=torch.int64), True, "n"),
        ValueError,
        r"num_classes=True",
    ),
    "label out of range": (
        lambda: ImageSet(U8, torch.tensor([0, 1, 2, 3]), 3, "n"),
        ValueError,
        r"labels span \[0, 3\]; expected values in \[0, 2\]",
    ),
    "name int": (
        lambda: ImageSet(U8, torch.zeros(4, dtype=torch.int64), 3, 7),
        TypeError,
        r"name=7 is not valid",
    ),
    "image_size 0": (lambda: load_digits(0), ValueError, r"image_size=0 is not valid"),
    "image_size -8": (lambda: load_digits(-8), ValueError, r"image_size=-8 is not valid"),
    "image_size float": (lambda: load_digits(32.0), ValueError, r"image_size=32.0 is not valid"),
    "image_size bool": (lambda: load_digits(True), ValueError, r"image_size=True is not valid"),
    "image_size str": (lambda: load_digits("32"), ValueError, r"image_size='32' is not valid"),
    "digits seed str": (lambda: load_digits(8, seed="0"), ValueError, r"seed='0' is not valid"),
    "fraction 0": (lambda: split_for_search(_images(), 0.0), ValueError, r"fraction=0.0"),
    "fraction 1": (lambda: split_for_search(_images(), 1.0), ValueError, r"fraction=1.0"),
    "fraction 1.5": (lambda: split_for_search(_images(), 1.5), ValueError, r"fraction=1.5"),
    "fraction nan": (lambda: split_for_search(_images(), math.nan), ValueError, r"fraction=nan"),
    "fraction str": (lambda: split_for_search(_images(), "0.5"), ValueError, r"fraction='0.5'"),
    "fraction empties a half": (
        lambda: split_for_search(_images(2), 0.2),
        ValueError,
        r"fraction=0.2 is not valid for 2 images",
    ),
    "split seed float": (lambda: split_for_search(_images(), 0.5, 1.5), ValueError, r"seed=1.5"),
    "stats chunk 0": (lambda: channel_stats(_images(), 0), ValueError, r"chunk=0"),
    "crop padding -1": (lambda: random_crop(U8, -1), ValueError, r"padding=-1"),
    "crop padding bool": (lambda: random_crop(U8, True), ValueError, r"padding=True"),
    "crop padding float": (lambda: random_crop(U8, 2.0), ValueError, r"padding=2.0"),
    "crop 3-d": (lambda: random_crop(U8[0]), ValueError, r"x must be a 4-d batch"),
    "crop list": (lambda: random_crop([[0]]), TypeError, r"x is a list; expected a tensor"),
    "flip p 1.5": (lambda: random_flip(U8, 1.5), ValueError, r"p=1.5 is not valid"),
    "flip p -0.1": (lambda: random_flip(U8, -0.1), ValueError, r"p=-0.1 is not valid"),
    "flip p str": (lambda: random_flip(U8, "0.5"), ValueError, r"p='0.5' is not valid"),
    "cutout -1": (lambda: cutout(U8.float(), -1), ValueError, r"length=-1"),
    "cutout bool": (lambda: cutout(U8.float(), True), ValueError, r"length=True"),
    "normalize float": (lambda: normalize(U8.float(), (0,) * 3, (1,) * 3), ValueError, r"dtype"),
    "normalize short mean": (lambda: normalize(U8, (0, 0), (1, 1, 1)), ValueError, r"one value"),
    "normalize zero std": (
        lambda: normalize(U8, (0,) * 3, (1, 0, 1)),
        ValueError,
        r"std=.*positive",
    ),
    "augment std mismatch": (lambda: Augment((0.5,) * 3, (0.5,) * 2), ValueError, r"mean=.*std="),
    "augment std 0": (lambda: Augment((0.5,) * 3, (0.5, 0, 0.5)), ValueError, r"positive std"),
    "augment std str": (lambda: Augment((0.5,) * 3, ("a", "b", "c")), ValueError, r"std="),
    "augment padding -1": (lambda: Augment((0.5,), (0.5,), -1), ValueError, r"crop_padding=-1"),
    "augment flip str": (lambda: Augment((0.5,), (0.5,), 4, "no"), TypeError, r"flip='no'"),
    "augment cutout -2": (
        lambda: Augment((0.5,), (0.5,), 4, True, -2),
        ValueError,
        r"cutout_length=-2",
    ),
    "cifar root missing": (
        lambda: load_cifar("/nonexistent/cifar"),
        FileNotFoundError,
        r"root='/nonexistent/cifar'",
    ),
    "cifar train str": (lambda: load_cifar(".", train="test"), TypeError, r"train='test'"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data(case):
    _raises(*DATA_CASES[case])


LOADER_CASES = {
    "batch_size 0": ({"batch_size": 0}, ValueError, r"batch_size=0 is not valid"),
    "batch_size float": ({"batch_size": 2.0}, ValueError, r"batch_size=2.0"),
    "batch_size bool": ({"batch_size": True}, ValueError, r"batch_size=True"),
    "world_size 0": ({"world_size": 0}, ValueError, r"world_size=0"),
    "rank out of range": ({"rank": 2, "world_size": 2}, ValueError, r"rank=2 is not valid"),
    "rank negative": ({"rank": -1}, ValueError, r"rank=-1"),
    "shuffle str": ({"shuffle": "yes"}, TypeError, r"shuffle='yes'"),
    "drop_last int": ({"drop_last": 1}, TypeError, r"drop_last=1"),
    "seed str": ({"seed": "0"}, ValueError, r"seed='0'"),
    "augment not callable": ({"augment": "crop"}, TypeError, r"augment='crop' is not callable"),
    "batch larger than the data": (
        {"batch_size": 7, "drop_last": True},
        ValueError,
        r"batch_size=7 is larger than the 6 images of dataset 'tiny'.*drop_last",
    ),
    "batch larger than a rank's share": (
        {"batch_size": 4, "drop_last": True, "world_size": 2},
        ValueError,
        r"batch_size=4 is larger than the 3 images each rank sees",
    ),
}


@pytest.mark.parametrize("case", sorted(LOADER_CASES))
def test_bad_loaders(case):
    change, error, match = LOADER_CASES[case]
    args = {"batch_size": 2} | change
    with pytest.raises(error, match=match):
        TensorLoader(_images(), **args)


def test_loader_dataset_checks():
    with pytest.raises(TypeError, match=r"dataset is a Tensor; expected an ImageSet"):
        TensorLoader(U8, 2)
    empty = ImageSet(U8[:0], torch.zeros(0, dtype=torch.int64), 3, "empty")
    with pytest.raises(ValueError, match=r"dataset 'empty' is empty"):
        TensorLoader(empty, 2)
    with pytest.raises(ValueError, match=r"dataset 'empty' is empty"):
        channel_stats(empty)
    with pytest.raises(ValueError, match=r"epoch=-1 is not valid"):
        TensorLoader(_images(), 2).set_epoch(-1)


def test_a_batch_larger_than_the_data_without_drop_last_is_one_short_batch():
    batches = list(TensorLoader(_images(), 32))
    assert len(batches) == 1 and batches[0][0].shape[0] == 6


# --------------------------------------------------------------------------- profile

PROFILE_CASES = {
    "params of a tensor": (lambda: count_params(torch.zeros(1)), TypeError, r"module is a Tensor"),
    "params trainable str": (
        lambda: count_params(nn.Linear(2, 2), "yes"),
        TypeError,
        r"trainable_only='yes'",
    ),
    "macs of a function": (lambda: count_macs(print, 1), TypeError, r"module is a builtin"),
    "latency not callable": (lambda: measure_latency(3), TypeError, r"fn=3 is not callable"),
    "latency warmup -1": (lambda: measure_latency(int, warmup=-1), ValueError, r"warmup=-1"),
    "latency warmup float": (lambda: measure_latency(int, warmup=1.5), ValueError, r"warmup=1.5"),
    "latency repeats 0": (lambda: measure_latency(int, repeats=0), ValueError, r"repeats=0"),
    "latency repeats bool": (
        lambda: measure_latency(int, repeats=True),
        ValueError,
        r"repeats=True",
    ),
    "latency bad device": (
        lambda: measure_latency(int, device="gpu0"),
        ValueError,
        r"device='gpu0'",
    ),
    "memory not callable": (lambda: peak_memory(None), TypeError, r"fn=None is not callable"),
    "memory bad device": (lambda: peak_memory(int, device="tpu:x"), ValueError, r"device='tpu:x'"),
    "profile a function": (
        lambda: profile_module(len, torch.zeros(1)),
        TypeError,
        r"module is a builtin_function_or_method",
    ),
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_bad_profile_calls(case):
    _raises(*PROFILE_CASES[case])


def test_cells_check_that_their_inputs_meet():
    cell = Cell(GENE, 4, 4, 4, False, False)
    with pytest.raises(
        ValueError, match=r"Cell: s0 and s1 give \(8, 8\) and \(4, 4\).*the size of"
    ):
        cell(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4))
    search = SearchCell("darts", 4, 4, 4, False, True)
    x = torch.randn(2, 4, 4, 4)
    with pytest.raises(ValueError, match=r"SearchCell: s0 and s1 .*twice the size of s1"):
        search(x, x, torch.zeros(14, 8))


@pytest.mark.parametrize("family", ["feat", 3, None])
def test_hetero_output_rejects_unknown_families(family):
    from nos_ops.hetero import hetero_output

    with pytest.raises(ValueError, match=rf"{family!r} is not a valid Family"):
        hetero_output(nn.Identity(), family, torch.zeros(1, 1, 2, 2))


def test_kernel_extent_needs_int_sizes():
    from nos_ops.hetero import kernel_extent

    with pytest.raises(TypeError, match=r"Identity has kernel_size=None and dilation=None"):
        kernel_extent(nn.Identity())


# ---------------------------------------------------------------------------- blocks


def test_search_block_arguments_and_inputs():
    from nos_ops.block import SearchResidualBlock

    _raises(lambda: SearchResidualBlock(0, 2, False, "nos"), ValueError, r"channels=0")
    _raises(lambda: SearchResidualBlock(4, 1, False, "nos"), ValueError, r"num_inputs=1 .*>= 2")
    _raises(lambda: SearchResidualBlock(4, 2.0, False, "nos"), ValueError, r"num_inputs=2.0")
    _raises(lambda: SearchResidualBlock(4, 2, "no", "nos"), TypeError, r"reduction='no'")
    block = SearchResidualBlock(4, 2, False, "nos")
    x = torch.randn(2, 4, 6, 6)
    w1, w2 = torch.rand(2, 11), torch.rand(11)
    _raises(lambda: block([x], w1, w2), ValueError, r"states has 1 tensors; .* takes 2 inputs")
    _raises(lambda: block([x, x], torch.rand(3, 11), w2), ValueError, r"tier1_weights .*\(2, 11\)")
    _raises(lambda: block([x, x], w1), ValueError, r"tier2_weights: this block needs")
    darts = SearchResidualBlock(4, 2, False, "darts")
    _raises(lambda: darts([x, x], torch.rand(2, 8), torch.rand(8)), ValueError, r"takes no")


def test_derived_block_arguments_and_inputs():
    from nos_ops.block import HeterogeneousResidualBlock, calibrate, drop_path
    from nos_ops.genotype import BlockGene

    gene = BlockGene((("sep_conv_3x3", 0), ("spatial_attention", 2)))
    _raises(lambda: HeterogeneousResidualBlock(4, {"edges": []}, False), TypeError, r"gene=")
    _raises(lambda: HeterogeneousResidualBlock(-4, gene, False), ValueError, r"channels=-4")
    _raises(lambda: HeterogeneousResidualBlock(4, gene, 0), TypeError, r"reduction=0")
    block = HeterogeneousResidualBlock(4, gene, False)
    x = torch.randn(2, 4, 6, 6)
    _raises(lambda: block([x, x]), ValueError, r"states has 2 tensors; .* reads node 2")
    _raises(lambda: block([x, x, x], 1.0), ValueError, r"drop_prob=1.0 is not valid")
    _raises(lambda: calibrate(x), TypeError, r"out is a Tensor; expected a HeteroOutput")
    for bad in (1.0, -0.2, float("nan"), "0.3"):
        with pytest.raises(ValueError, match=r"drop_prob=.* is not valid"):
            drop_path(x, bad)


@pytest.mark.parametrize("train", [True, False])
def test_nos_networks_take_batch_zero(train):
    """With every op family in the cells (dynamic convs included), batch 0 still works."""
    space = get_space("nos")
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(space.num_edges, space.num_ops, generator=gen) for _ in range(2)]
    from nos_ops.genotype import derive

    net = NetworkCIFAR(4, 10, 3, derive(*weights, space)).train(train)
    assert net(torch.randn(0, 3, 32, 32))[0].shape == (0, 10)
    search = SearchNetwork(4, 10, 3, "nos").train(train)
    assert search(torch.randn(0, 3, 8, 8)).shape == (0, 10)


@pytest.mark.parametrize("build", ["resnet18", "pyramidnet"])
@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.randn(2, 1, 8, 8), ValueError, r"x has 1 channels .* channels=3"),
        (torch.randn(2, 3, 8, 8, dtype=torch.float64), TypeError, r"float32 parameters"),
        (torch.randn(3, 8, 8), ValueError, r"4-d tensor .*unsqueeze\(0\)"),
    ],
)
def test_resnet_and_teacher_inputs_are_checked(build, x, error, match):
    from nos_ops.models.resnet import resnet18_cifar
    from nos_ops.models.teachers import pyramidnet

    model = resnet18_cifar() if build == "resnet18" else pyramidnet(20, 12, 10, False)
    with pytest.raises(error, match=match):
        model(x)
    with pytest.raises(error, match=match):
        model.stage_features(x)
