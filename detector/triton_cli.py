"""``inscope export-triton``: a Triton model repository a facility's GPU server can load.

Examples
--------
::

    inscope export-triton /srv/triton-models                 # the shipped model, uint16
    inscope export-triton /srv/triton-models --model my.onnx --name my-nuclei --dtype uint8

Then, on the server: ``tritonserver --model-repository=/srv/triton-models`` (see
docs/scale-out.md), and on each microscope: ``inscope run --model
triton://SERVER:8001/inscope-nuclei``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_batcher_arguments(p: argparse.ArgumentParser) -> None:
    """``--max-batch`` and ``--queue-delay-us``: Triton's dynamic batcher as
    ``export-triton`` configures it, one definition for the command and for the model of
    a shared server (``benchmarks/scale_out_model.py``), so both use the same defaults."""
    p.add_argument("--max-batch", type=int, default=8,
                   help="largest batch the server forms (default 8)")
    p.add_argument("--queue-delay-us", type=int, default=500,
                   help="dynamic batching: how long a request may wait for others, in µs "
                   "(default 500; under load batches also form from queued requests)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-triton", help="write a Triton Inference Server model repository",
        description="Write DIR/NAME/config.pbtxt and DIR/NAME/1/model.onnx for Triton's ONNX "
        "Runtime backend: the detector with its normalisation built in, taking the camera's "
        "raw pixels, with dynamic batching. Microscopes then use --model "
        "triton://HOST:PORT/NAME.")
    p.add_argument("dir", type=Path, help="the model repository (created if missing)")
    p.add_argument("--model", default=None,
                   help="inscope .onnx model with its .json card (default: the shipped model)")
    p.add_argument("--name", default=None, help="Triton model name (default: the card's name)")
    p.add_argument("--dtype", default="uint16", choices=["uint16", "uint8", "float32"],
                   help="pixel type the cameras send (default uint16)")
    add_batcher_arguments(p)
    p.add_argument("--instance-kind", default=None, choices=["gpu", "cpu"],
                   help="where Triton runs the model (default: Triton decides; GPU if any)")
    p.add_argument("--instances", type=int, default=1,
                   help="model instances with --instance-kind (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR/NAME if it exists")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from inscope.detector.triton_export import export_triton

    if args.max_batch < 1 or args.queue_delay_us < 0 or args.instances < 1:
        print("error: --max-batch and --instances must be >= 1 and --queue-delay-us >= 0",
              file=sys.stderr)
        return 2
    kind = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}.get(args.instance_kind or "")
    try:
        ex = export_triton(args.dir, args.model, name=args.name, input_dtype=args.dtype,
                           max_batch_size=args.max_batch,
                           max_queue_delay_us=args.queue_delay_us, instance_kind=kind,
                           instances=args.instances, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {ex.config_path} and {ex.onnx_path}")
    print(f"serve:  tritonserver --model-repository={Path(args.dir).resolve()}")
    print(f"use:    inscope run --model triton://SERVER:8001/{ex.name}")
    return 0
