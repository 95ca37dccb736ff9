"""Export an evaluation network with torch.export (.pt2) or to ONNX, with a dynamic batch.

    # a trained network: the checkpoint carries its genotype and architecture
    python examples/export.py --checkpoint runs/eval/checkpoint.pt --format onnx --out net.onnx
    # an untrained network from a genotype (e.g. to test a deployment pipeline)
    python examples/export.py --genotype genotype.json --format torch --out net.pt2

After writing, the exported graph is run at a batch size different from the example's
and compared with the eager model. ONNX needs ``pip install "nos_ops[export]"``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nos_ops.export import export_onnx, export_program, load_network
from nos_ops.genotype import get_genotype
from nos_ops.trainer import build_network
from nos_ops.utils.checkpoint import load_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genotype", help="genotype.json or a name (DARTS_V2, ...)")
    parser.add_argument("--checkpoint", help="a nos_ops.trainer checkpoint (overrides the rest)")
    parser.add_argument("--format", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--out", required=True, help="output file (.pt2 or .onnx)")
    parser.add_argument("--layers", type=int, default=20, help="cells (without --checkpoint)")
    parser.add_argument("--channels", type=int, default=36, help="initial channels")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32, help="input height and width")
    parser.add_argument("--batch-size", type=int, default=2, help="batch of the example input")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch dimension")
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.genotype is None:
        parser.error("one of --checkpoint or --genotype is required")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.checkpoint is not None:
        model = load_network(args.checkpoint)
        image_size = load_checkpoint(args.checkpoint)["arch"].get("image_size", args.image_size)
    else:
        arch = {
            "network": "cifar",
            "channels": args.channels,
            "layers": args.layers,
            "num_classes": args.num_classes,
            "auxiliary": False,
        }
        model = build_network(arch, get_genotype(args.genotype)).eval()
        image_size = args.image_size
    example = torch.randn(args.batch_size, 3, image_size, image_size)
    dynamic = not args.static_batch
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_batch = args.batch_size + 1 if dynamic else args.batch_size
    check = torch.randn(check_batch, 3, image_size, image_size)
    with torch.no_grad():
        expected = model(check)[0]
    if args.format == "torch":
        program = export_program(model, example, dynamic_batch=dynamic)
        torch.export.save(program, out)
        got = torch.export.load(out).module()(check)
    else:
        export_onnx(model, out, example, dynamic_batch=dynamic)
        try:
            import onnxruntime
        except ImportError:
            print(f"wrote {out}; onnxruntime is not installed, so the output was not checked")
            return
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"input": check.numpy()})[0])
    diff = (got - expected).abs().max().item()
    print(f"wrote {out}; batch {check_batch}: max |exported - eager| = {diff:.2e}")


if __name__ == "__main__":
    main()
