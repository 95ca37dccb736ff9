"""torch.export / ONNX export with a dynamic batch, and rebuilding networks from checkpoints."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from nos_ops import BlockGene, CellGene, Genotype, NetworkCIFAR
from nos_ops.engine import CheckpointError
from nos_ops.export import LogitsOnly, export_onnx, export_program, load_network
from nos_ops.network import build_network, save_network
from nos_ops.ops import create_op, dynamic

# dynamic conv and attention in both tiers; 3x3 kernels keep the traced graph small
NOS_TINY = Genotype(
    normal=CellGene(
        (
            BlockGene((("dynamic_conv_3x3", 0), ("identity", 1)), "spatial_attention"),
            BlockGene((("channel_attention", 0), ("sep_conv_3x3", 2)), "dynamic_conv_3x3"),
        ),
        (2, 3),
    ),
    reduce=CellGene(
        (BlockGene((("max_pool_3x3", 0), ("spatial_attention", 1)), "dynamic_conv_3x3"),),
        (2,),
    ),
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine the
    threads' barriers cost 10-60x; the previous setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ARCH = {
    "network": "cifar",
    "channels": 4,
    "layers": 3,
    "num_classes": 10,
    "auxiliary": True,
    "image_size": 16,
}


@pytest.fixture(scope="module")
def network() -> NetworkCIFAR:
    torch.manual_seed(0)
    model = build_network(ARCH, NOS_TINY)  # at 16x16 the auxiliary head pools adaptively
    # non-trivial BN statistics, so eval mode differs from train mode
    with torch.no_grad():
        model(torch.randn(8, 3, 16, 16))
    return model.eval()


def _eager(model: NetworkCIFAR, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[0]


def test_logits_only_drops_aux(network: NetworkCIFAR) -> None:
    x = torch.randn(2, 3, 16, 16)
    network.train()
    try:
        out = LogitsOnly(network)(x)
    finally:
        network.eval()
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


def test_export_program_dynamic_batch(network: NetworkCIFAR) -> None:
    network.train()  # export must switch to eval mode and restore the flags
    program = export_program(network, torch.randn(2, 3, 16, 16))
    assert network.training and network.cells[0].training
    network.eval()
    x = torch.randn(5, 3, 16, 16)
    torch.testing.assert_close(program.module()(x), _eager(network, x), atol=1e-4, rtol=1e-4)


def test_export_traces_each_per_sample_conv_as_one_unfold(
    network: NetworkCIFAR, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under export ``impl="auto"`` takes the ``F.unfold`` form: one im2col node per
    per-sample conv, not k*k shifted multiply-adds (a graph several times larger)."""
    calls = []
    grouped = dynamic._CONVS["grouped"]
    monkeypatch.setitem(dynamic._CONVS, "grouped", lambda *a: calls.append(1) or grouped(*a))
    _eager(network, torch.randn(2, 3, 16, 16))
    program = export_program(network, torch.randn(2, 3, 16, 16))
    targets = Counter(str(node.target) for node in program.graph.nodes)
    assert calls and targets["aten.im2col.default"] == len(calls)
    assert targets["aten.slice.Tensor"] < 9  # the shifted 3x3 form alone slices 18 times


@pytest.mark.parametrize("name", ["dynamic_conv_3x3", "dil_dynamic_conv_5x5"])
def test_export_generates_kernels_with_convs(name: str) -> None:
    """Under export the kernel generator is 1x1 convs, one bmm and one RMS norm node (no
    batch-expanded weights): the same kernels as eager."""
    torch.manual_seed(0)
    op = create_op(name, 6, 1).eval()
    op.decode.weight.data.normal_()  # kernels far from zero

    class Kernels(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return op.kernels(x)

    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(
        Kernels(), (torch.randn(2, 6, 7, 9),), dynamic_shapes={"x": {0: batch}}
    )
    targets = Counter(str(n.target) for n in program.graph.nodes if n.op == "call_function")
    assert targets["aten.bmm.default"] == 1 and targets["aten.conv2d.default"] == 3
    assert targets["aten.expand.default"] == 0
    assert targets["aten.rms_norm.default"] == hasattr(torch.nn.functional, "rms_norm")
    x = torch.randn(3, 6, 7, 9)
    torch.testing.assert_close(program.module()(x), op.kernels(x))


@pytest.mark.parametrize("stride", [1, 2])
def test_export_traces_average_pooling_as_one_node(stride: int) -> None:
    pool = create_op("avg_pool_3x3", 4, stride)
    program = torch.export.export(pool, (torch.randn(2, 4, 7, 9),))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets == ["aten.avg_pool2d.default"]
    x = torch.randn(2, 4, 7, 9)
    torch.testing.assert_close(program.module()(x), pool(x))


def test_export_onnx_dynamic_batch(network: NetworkCIFAR, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="ONNX checks need the 'export' extra")
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    path = export_onnx(network, tmp_path / "net.onnx", torch.randn(1, 3, 16, 16))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and not isinstance(inp.shape[0], int)
    for batch in (3, 7):
        x = torch.randn(batch, 3, 16, 16)
        (got,) = session.run(None, {"input": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), _eager(network, x), atol=1e-4, rtol=1e-4)


def test_export_rejects_non_image_input(network: NetworkCIFAR) -> None:
    with pytest.raises(ValueError, match="example_input must be B x C x H x W"):
        export_program(network, torch.randn(3, 16, 16))


def test_load_network_of_a_plain_state_dict_fails(network: NetworkCIFAR, tmp_path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"model": network.state_dict()}, path)
    with pytest.raises(CheckpointError, match="plain.pt is not a nos_ops checkpoint"):
        load_network(path)


def test_load_network_rebuilds_from_checkpoint(network: NetworkCIFAR, tmp_path) -> None:
    path = tmp_path / "ckpt.pt"
    save_network(path, network, ARCH, NOS_TINY)
    loaded = load_network(path)
    assert not loaded.training and loaded.genotype == NOS_TINY
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(_eager(loaded, x), _eager(network, x), atol=0, rtol=0)
