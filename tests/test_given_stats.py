"""Normalisation statistics given by hand (``mean``/``std``) for every pipeline."""

from __future__ import annotations

import pytest
import torch

from nos_ops.cli import build_parser, make_config
from nos_ops.data import load_digits
from nos_ops.engine import setup_distributed
from nos_ops.engine.data import classifier_loaders, given_stats
from nos_ops.search import SearchConfig
from nos_ops.search.task import SearchTask
from nos_ops.study import StudyConfig
from nos_ops.teacher import TeacherConfig
from nos_ops.train import TrainConfig

CONFIGS = [SearchConfig, TrainConfig, TeacherConfig, StudyConfig]
MEAN, STD = [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]


@pytest.mark.parametrize("cls", CONFIGS)
@pytest.mark.parametrize(
    ("mean", "std", "words"),
    [
        (MEAN, None, "give both"),
        (None, STD, "give both"),
        ([0.1, 0.2], STD, "as many means as stds"),
        ([], [], "one number per"),
        (MEAN, [0.5, 0.0, 0.7], "stds > 0"),
        ([float("nan"), 0.2, 0.3], STD, "finite"),
    ],
)
def test_bad_stats_are_refused_naming_both(cls, mean, std, words):
    with pytest.raises(ValueError, match="mean=") as error:
        cls(mean=mean, std=std)
    assert words in str(error.value)


def test_given_stats_win_and_are_checked_against_the_channels():
    train, _, _ = load_digits(8)
    config = TrainConfig(mean=MEAN, std=STD)
    assert given_stats(config, train, None, None) == (tuple(MEAN), tuple(STD))
    assert given_stats(TrainConfig(), train, (0.0,) * 3, (1.0,) * 3) == ((0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match="3 channel"):
        given_stats(TrainConfig(mean=[0.5], std=[0.2]), train, None, None)


def test_classifier_loaders_normalise_with_the_given_stats():
    train, _, test = load_digits(8)
    ctx = setup_distributed("cpu")
    config = TrainConfig(mean=MEAN, std=STD, batch_size=16)
    loaders = classifier_loaders(train, test, ctx, config, (0.9,) * 3, (0.9,) * 3)
    for loader in loaders[:2]:
        assert loader.augment.mean == tuple(MEAN) and loader.augment.std == tuple(STD)
    x, _ = next(iter(loaders[1]))
    expected = (test.images[:16].float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(
        STD
    ).view(3, 1, 1)
    torch.testing.assert_close(x, expected)


def test_search_normalises_with_the_given_stats(tmp_path):
    config = SearchConfig(
        mean=MEAN, std=STD, teacher=None, out=str(tmp_path), channels=4, layers=3
    ).resolved()
    task = SearchTask(config, setup_distributed("cpu"))
    for loader in (*task.loaders, task.acc_loader):
        assert loader.augment.mean == tuple(MEAN) and loader.augment.std == tuple(STD)


@pytest.mark.parametrize("command", ["search", "train", "teacher", "study"])
def test_cli_takes_mean_and_std(command):
    args = build_parser().parse_args([command, "--mean", *map(str, MEAN), "--std", *map(str, STD)])
    config = make_config(args)
    assert config.mean == MEAN and config.std == STD
