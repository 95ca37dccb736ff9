"""Export a trained network in Python: what ``nos-ops export`` runs.

    python examples/export.py runs/train/network.pt net.pt2

:func:`nos_ops.network.load_network` rebuilds the network from the file ``nos-ops train``
writes; :func:`nos_ops.export.export_program` traces it with a dynamic batch (ONNX:
:func:`nos_ops.export.export_onnx`, needs ``pip install "nos_ops[export]"``).
"""

from __future__ import annotations

import sys

import torch

from nos_ops.engine import load_checkpoint
from nos_ops.export import export_program
from nos_ops.network import load_network


def main(argv: list[str] | None = None) -> None:
    network, out = sys.argv[1:3] if argv is None else argv
    model = load_network(network)
    size = load_checkpoint(network, "network")["arch"]["image_size"]
    program = export_program(model, torch.randn(2, 3, size, size), dynamic_batch=True)
    torch.export.save(program, out)
    x = torch.randn(3, 3, size, size)
    diff = (torch.export.load(out).module()(x) - model(x)[0]).abs().max().item()
    print(f"wrote {out}; max |exported - eager| at batch 3: {diff:.2e}")


if __name__ == "__main__":
    main()
