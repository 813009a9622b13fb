"""Deployment: any ``fmd`` model exported to ONNX, checked against eager PyTorch, run in ONNX Runtime.

Two recipes (``torch.onnx.export`` with the dynamo exporter, then ``onnxruntime``):

* **fixed batch** (``batch=1``, the deployment case): the graph knows every shape, so each dynamic
  layer is exported with the strategy eager PyTorch picks at that batch (at batch 1 it mixes its
  kernel, then runs one ordinary convolution);
* **dynamic batch** (``batch=None``): the batch is symbolic, so each layer takes a strategy that
  does not depend on it (the K-fold convolution or im2col matmul, see
  :func:`fmd.engine.choose_strategy`): correct at every batch size, at K times the convolution's
  arithmetic.

:func:`export_onnx` writes the graph and, unless told not to, runs it in ONNX Runtime against the
eager model (:func:`check_onnx`); ``python -m fmd.export`` does the same from the command line.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from . import cli

# Largest batch a dynamic-batch export promises to accept (torch.export wants a bound).
MAX_BATCH = 4096


def export_onnx(model: nn.Module, path: Path, input_size: Sequence[int] = (3, 224, 224),
                batch: Optional[int] = 1, check: bool = True, threads: Optional[int] = None
                ) -> Dict[str, object]:
    """Export ``model`` (eval mode) to ``path`` with a fixed ``batch``, or a dynamic one (None).

    Returns the path, the batch ("dynamic" or the number) and, with ``check``, the largest
    difference between ONNX Runtime's outputs and eager PyTorch's (:func:`check_onnx`).
    """
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be at least 1 (or None for a dynamic batch), got {batch}")
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (channels, height, width), got {tuple(input_size)}")
    import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it: fail early, by name)

    model.eval()
    p = next(model.parameters())
    example = torch.randn(batch or 2, *input_size, dtype=p.dtype, device=p.device)
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=dynamic,
                          input_names=["input"], output_names=["output"], verbose=False)
    report: Dict[str, object] = {"path": str(path), "batch": batch or "dynamic"}
    if check:
        report["max_abs_diff"] = check_onnx(model, path, input_size,
                                            [batch] if batch else [1, 3], threads=threads)
    return report


def session(path: Path, threads: Optional[int] = None):
    """An ONNX Runtime CPU session for the graph at ``path`` (``threads`` intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(model: nn.Module, path: Path, input_size: Sequence[int], batches: Sequence[int],
               threads: Optional[int] = None, rtol: float = 1e-4, atol: float = 1e-4) -> float:
    """Run the graph at ``path`` in ONNX Runtime at each batch size against ``model`` in eager mode;
    the largest absolute difference, or a RuntimeError naming it when it exceeds the tolerance."""
    runner = session(path, threads)
    model.eval()
    worst = 0.0
    for size in batches:
        x = torch.randn(size, *input_size)
        with torch.no_grad():
            expected = model(x).float()
        found = torch.from_numpy(runner.run(None, {runner.get_inputs()[0].name: x.numpy()})[0])
        diff = (found - expected).abs()
        worst = max(worst, float(diff.max()))
        if not bool((diff <= atol + rtol * expected.abs()).all()):
            raise RuntimeError(f"the ONNX graph {path} differs from eager PyTorch at batch {size}: "
                               f"max |difference| {float(diff.max()):.3g}")
    return worst


def conv_output_channels(path: Path) -> List[int]:
    """Output channels of every Conv node of the ONNX graph at ``path`` (from shape inference)."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.value_info, *graph.input, *graph.output)}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    return [shapes[node.input[1]][0] for node in graph.node if node.op_type == "Conv"]


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return cli.run(_main, sys.argv[1:] if argv is None else argv, faults=(RuntimeError,))


def _main(argv: List[str]) -> int:
    from .conv import CONVS
    from .models import ResNet

    parser = cli.Parser(prog="python -m fmd.export", description=__doc__)
    parser.add_argument("out", type=Path, help="the .onnx file to write")
    parser.add_argument("--conv", default="fmdconv", choices=list(CONVS))
    parser.add_argument("--depth", type=int, default=18, choices=(18, 34, 50, 101, 152))
    parser.add_argument("--stem", default="imagenet", choices=("imagenet", "cifar"))
    parser.add_argument("--width", type=cli.positive_int, default=64)
    parser.add_argument("--num-classes", type=cli.positive_int, default=1000)
    parser.add_argument("--in-channels", type=cli.positive_int, default=3)
    parser.add_argument("--size", type=cli.positive_int, default=224, help="input height and width")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a checkpoint written by fmd.train, or a state dict (default: random)")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=cli.positive_int, default=1,
                       help="fixed batch of the graph (default 1: deployment)")
    batch.add_argument("--dynamic-batch", action="store_true", help="a symbolic batch instead")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the graph in ONNX Runtime against eager PyTorch")
    args = parser.parse_args(argv)
    model = ResNet(args.depth, args.conv, args.num_classes, args.stem, args.width,
                   in_channels=args.in_channels)
    if args.weights is not None:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    size = (args.in_channels, args.size, args.size)
    print(f"exporting {args.conv} ResNet-{args.depth} ({args.stem} stem, width {args.width}) at "
          f"{'a dynamic batch' if args.dynamic_batch else f'batch {args.batch}'} …", flush=True)
    report = export_onnx(model, args.out, size, None if args.dynamic_batch else args.batch,
                         check=not args.no_check)
    mb = args.out.stat().st_size / 1e6
    checked = ("" if args.no_check else
               f"; ONNX Runtime matches eager PyTorch (max |difference| {report['max_abs_diff']:.2g})")
    print(f"wrote {args.out} ({mb:.1f} MB){checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
