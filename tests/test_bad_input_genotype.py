"""Bad genotype files and architecture weights: strict, and every file error names the file.

Sources are ints (not bools, not floats) in range, ops are registered names (never
``none``), ``concat`` names inner nodes once each; binary files and torch checkpoints are
refused with a message naming the file; ``derive`` refuses non-finite weights.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from nos_ops.genotype import (
    DARTS_V2,
    BlockGene,
    CellGene,
    Genotype,
    derive,
    derive_cell,
    from_darts,
    get_genotype,
)
from nos_ops.space import get_space

VALID = Genotype(
    CellGene(
        (
            BlockGene((("sep_conv_3x3", 0), ("spatial_attention", 1)), "dynamic_conv_3x3"),
            BlockGene((("channel_attention", 0), ("sep_conv_5x5", 2)), "identity"),
        ),
        (2, 3),
    ),
    CellGene((BlockGene((("max_pool_3x3", 0), ("identity", 1)), "channel_attention"),), (2,)),
)


def _edit(change) -> dict:
    data = VALID.to_dict()
    change(data)
    return data


def _edge(cell: str, block: int, edge: int, index: int, value):
    return lambda d: d[cell]["blocks"][block]["edges"][edge].__setitem__(index, value)


def _set(path: tuple, value):
    def change(d):
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return change


def _pop(path: tuple):
    def change(d):
        for key in path[:-1]:
            d = d[key]
        d.pop(path[-1])

    return change


# name: (file contents as a dict/list/str to dump, or bytes to write as they are; pattern)
BAD_FILES = {
    "source 2.9": (_edit(_edge("normal", 1, 1, 1, 2.9)), r"source must be an int.*not a float"),
    "source 1.0": (_edit(_edge("normal", 1, 1, 1, 1.0)), r"\('sep_conv_5x5', 1.0\).*not a float"),
    "source true": (_edit(_edge("normal", 0, 1, 1, True)), r"source must be an int.*not a bool"),
    "source false": (_edit(_edge("reduce", 0, 0, 1, False)), r"not a bool"),
    "source string": (_edit(_edge("normal", 0, 0, 1, "0")), r"source must be an int.*not a str"),
    "source null": (_edit(_edge("normal", 0, 0, 1, None)), r"source must be an int"),
    "source negative": (_edit(_edge("normal", 0, 0, 1, -1)), r"into node 2: source must be"),
    "source too large": (_edit(_edge("normal", 1, 0, 1, 3)), r"into node 3: .*in \[0, 2\]"),
    "source far too large": (_edit(_edge("reduce", 0, 1, 1, 99)), r"in \[0, 1\]"),
    "source NaN": (_edit(_edge("normal", 0, 0, 1, float("nan"))), r"source must be an int"),
    "unknown op": (
        _edit(_edge("normal", 0, 0, 0, "sep_conv_9x9")),
        r"unknown op name='sep_conv_9x9'",
    ),
    "darts name": (
        _edit(_edge("normal", 0, 0, 0, "skip_connect")),
        r"unknown op name='skip_connect'",
    ),
    "op int": (_edit(_edge("normal", 0, 0, 0, 3)), r"op name=3 is not valid; expected a string"),
    "op null": (_edit(_edge("reduce", 0, 0, 0, None)), r"op name=None is not valid"),
    "op none": (_edit(_edge("normal", 0, 1, 0, "none")), r"op 'none' is not valid in a derived"),
    "tier2 none": (_edit(_set(("normal", "blocks", 0, "tier2"), "none")), r"tier2 .*'none'"),
    "tier2 unknown": (_edit(_set(("reduce", "blocks", 0, "tier2"), "gated")), r"name='gated'"),
    "tier2 int": (_edit(_set(("normal", "blocks", 1, "tier2"), 7)), r"tier2 .*op name=7"),
    "no feature op": (
        _edit(
            _set(
                ("normal", "blocks", 0, "edges"),
                [["spatial_attention", 0], ["dynamic_conv_3x3", 1]],
            )
        ),
        r"node 2 needs at least one feature op",
    ),
    "edge of one": (
        _edit(_set(("normal", "blocks", 0, "edges"), [["sep_conv_3x3"]])),
        r"not an \[op, source\] pair",
    ),
    "edge of three": (
        _edit(_set(("normal", "blocks", 0, "edges"), [["sep_conv_3x3", 0, 1]])),
        r"pair",
    ),
    "edge a string": (_edit(_set(("normal", "blocks", 0, "edges"), ["sep_conv_3x3"])), r"pair"),
    "edges a string": (
        _edit(_set(("normal", "blocks", 0, "edges"), "sep_conv_3x3")),
        r"edges of block 0 are not a list",
    ),
    "edges empty": (_edit(_set(("normal", "blocks", 1, "edges"), [])), r"node 3 has no edges"),
    "edges missing": (
        _edit(_pop(("normal", "blocks", 0, "edges"))),
        r"block 0 is not a dict with 'edges'",
    ),
    "block a list": (
        _edit(_set(("normal", "blocks", 0), [["sep_conv_3x3", 0]])),
        r"block 0 is not a dict",
    ),
    "blocks empty": (_edit(_set(("reduce", "blocks"), [])), r"a cell needs at least one block"),
    "blocks a dict": (
        _edit(_set(("reduce", "blocks"), {})),
        r"'blocks' is a dict; expected a list",
    ),
    "blocks missing": (_edit(_pop(("reduce", "blocks"))), r"the cell has no 'blocks'"),
    "concat duplicate": (
        _edit(_set(("normal", "concat"), [2, 2, 3])),
        r"concat=\(2, 2, 3\) .*names a node twice",
    ),
    "concat out of range": (
        _edit(_set(("normal", "concat"), [2, 4])),
        r"concat=\(2, 4\) must name inner nodes in \[2, 3\]",
    ),
    "concat input node": (_edit(_set(("normal", "concat"), [1, 2])), r"concat=\(1, 2\)"),
    "concat empty": (_edit(_set(("reduce", "concat"), [])), r"concat=\(\) must name"),
    "concat strings": (_edit(_set(("normal", "concat"), ["2", "3"])), r"concat=\('2', '3'\)"),
    "concat bools": (_edit(_set(("reduce", "concat"), [True])), r"concat=\(True,\)"),
    "concat floats": (_edit(_set(("normal", "concat"), [2.0, 3.0])), r"concat=\(2.0, 3.0\)"),
    "concat a string": (
        _edit(_set(("normal", "concat"), "23")),
        r"'concat' is a str; expected a list",
    ),
    "concat missing": (_edit(_pop(("normal", "concat"))), r"the cell has no 'concat'"),
    "cell missing": (_edit(_pop(("reduce",))), r"the 'reduce' cell is missing"),
    "cell null": (_edit(_set(("normal",), None)), r"a cell is a dict, got NoneType"),
    "cell a list": (_edit(_set(("reduce",), [1, 2])), r"a cell is a dict, got list"),
    "wrong schema": (_edit(_set(("schema",), "darts")), r"not a nos_ops genotype"),
    "no schema": (_edit(_pop(("schema",))), r"not a nos_ops genotype"),
    "version 2": (_edit(_set(("version",), 2)), r"version=2 is not supported; expected 1"),
    "version string": (_edit(_set(("version",), "1")), r"version='1' is not supported"),
    "no version": (_edit(_pop(("version",))), r"version=None is not supported"),
    "a list": ([1, 2, 3], r"not a nos_ops genotype"),
    "a string": ("DARTS_V2", r"not a nos_ops genotype"),
    "a number": (3, r"not a nos_ops genotype"),
    "null": (None, r"not a nos_ops genotype"),
    "truncated JSON": (b'{"schema": "nos_ops.genotype", "version": 1,', r"is not valid JSON"),
    "trailing comma": (b'{"schema": "nos_ops.genotype",}', r"is not valid JSON"),
    "empty file": (b"", r"is not valid JSON"),
    "binary bytes": (b"\xff\xfe\x00\x01garbage", r"is not a genotype JSON file: it holds binary"),
    "latin-1 text": ('{"schema": "é"}'.encode("latin-1"), r"binary \(non UTF-8\)"),
    "pickle": (pickle.dumps({"genotype": 1}, protocol=2), r"looks like a torch checkpoint"),
    "torch checkpoint": ("torch.save", r"looks like a torch checkpoint"),
}


def _write(tmp_path, case):
    content, _ = BAD_FILES[case]
    path = tmp_path / f"bad-{case.replace(' ', '_')}.json"
    if content == "torch.save":
        torch.save({"model": {}, "genotype": VALID.to_dict()}, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize("loader", [Genotype.load, get_genotype], ids=["load", "get_genotype"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_genotype_files_name_the_file(tmp_path, loader, case):
    path = _write(tmp_path, case)
    with pytest.raises(ValueError, match=BAD_FILES[case][1]) as info:
        loader(path)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, UnicodeDecodeError)


def test_the_valid_genotype_round_trips(tmp_path):
    """Guards the table above: the unedited file loads."""
    VALID.save(tmp_path / "good.json")
    assert Genotype.load(tmp_path / "good.json") == VALID


def test_missing_file_and_folder_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Genotype.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"genotype='.*missing.json' is neither a file"):
        get_genotype(tmp_path / "missing.json")
    with pytest.raises(IsADirectoryError, match=str(tmp_path.name)):
        Genotype.load(tmp_path)


@pytest.mark.parametrize("value", [3, 2.5, None, ["DARTS_V2"], b"DARTS_V2"])
def test_get_genotype_rejects_other_types(value):
    with pytest.raises(TypeError, match=r"genotype=.* is not valid; expected a Genotype, a name"):
        get_genotype(value)


# ------------------------------------------------------------------- genes built in Python

GENES = {
    "bool source": (lambda: BlockGene((("sep_conv_3x3", True),)).validate(2), "not a bool"),
    "float source": (lambda: BlockGene((("sep_conv_3x3", 1.0),)).validate(2), "not a float"),
    "none edge": (lambda: BlockGene((("none", 0),)).validate(2), "'none' is not valid"),
    "no edges": (lambda: BlockGene(()).validate(2), "has no edges"),
    "edges str": (lambda: BlockGene("sep_conv_3x3").validate(2), "edges='sep_conv_3x3' into"),
    "duplicate concat": (lambda: CellGene(VALID.normal.blocks, (2, 3, 3)), "names a node twice"),
    "concat bool": (lambda: CellGene(VALID.normal.blocks, (True, 3)), r"concat=\(True, 3\)"),
    "no blocks": (lambda: CellGene((), (2,)), "at least one block"),
    "block not a gene": (lambda: CellGene(({"edges": []},), (2,)), "block 0 is a dict"),
    "cell not a gene": (lambda: Genotype(VALID.normal, {"blocks": []}), "reduce=.* CellGene"),
    "darts float source": (
        lambda: from_darts(
            [("sep_conv_3x3", 0.0), ("sep_conv_3x3", 1)],
            [2],
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
            [2],
        ),
        "source must be an int",
    ),
    "darts duplicate concat": (
        lambda: from_darts(
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
            [2, 2],
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
            [2],
        ),
        "names a node twice",
    ),
}


@pytest.mark.parametrize("case", sorted(GENES))
def test_bad_genes_in_python(case):
    build, match = GENES[case]
    with pytest.raises(ValueError, match=match):
        build()


# -------------------------------------------------------------------------------- derive


def _weights(space: str = "nos") -> torch.Tensor:
    space = get_space(space)
    return torch.randn(space.num_edges, space.num_ops)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [(0, 0), (5, 3), (-1, -1)])
@pytest.mark.parametrize("space", ["nos", "darts"])
def test_derive_refuses_non_finite_weights(bad, where, space):
    weights = _weights(space)
    weights[where] = bad
    with pytest.raises(ValueError, match=r"weights holds 1 non-finite values \(NaN or inf\)"):
        derive_cell(weights, space)
    with pytest.raises(ValueError, match=r"normal|weights holds"):
        derive(weights, _weights(space), space)


def test_derive_refuses_non_finite_edge_weights():
    betas = torch.zeros(get_space("nos").tier1_edges)
    betas[3] = float("nan")
    with pytest.raises(ValueError, match=r"edge_weights holds 1 non-finite values"):
        derive_cell(_weights(), "nos", betas)


def test_derive_rejects_non_tensors():
    with pytest.raises(TypeError, match=r"weights must be a tensor, got list"):
        derive_cell(_weights().tolist(), "nos")
    with pytest.raises(TypeError, match=r"edge_weights must be a tensor, got list"):
        derive_cell(_weights(), "nos", [0.0] * 14)


def test_the_darts_genotype_is_valid():
    assert DARTS_V2.normal.concat == (2, 3, 4, 5)
