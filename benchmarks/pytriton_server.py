"""Serve an exported inscope Triton model repository with PyTriton, on CPU, without Docker.

A stand-in for ``tritonserver --model-repository DIR`` where the official server (its
ONNX Runtime backend) cannot run, e.g. a laptop or CI: the same gRPC protocol (KServe v2),
the same model name, input, outputs, dynamic batching and ``inscope_card`` parameter,
all read from the repository's ``config.pbtxt``; the network itself runs in ONNX Runtime
inside a PyTriton Python function. PyTriton (``nvidia-pytriton``) bundles a
``tritonserver`` binary with only its Python backend.

This script is standalone (numpy, onnxruntime, nvidia-pytriton; no inscope) because it
runs in its own virtual environment built on the distribution's Python: PyTriton's
Python-backend stub fails under a pyenv-built Python 3.11.7 (``'_thread.RLock' object has
no attribute '_recursion_count'``). :mod:`benchmarks.triton_local` builds that environment
and starts this script::

    python benchmarks/pytriton_server.py --repository runs/triton --model inscope-nuclei \\
        --grpc-port 8001

SIGTERM or Ctrl-C stop the server and its children.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np

# config.pbtxt data types -> numpy
_DTYPES = {"TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16, "TYPE_FP32": np.float32,
           "TYPE_FP16": np.float16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64}


def read_config(path: Path):
    """The repository's ``config.pbtxt`` as a Triton ``ModelConfig`` message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repository", type=Path, required=True)
    ap.add_argument("--model", required=True, help="model name (a folder in the repository)")
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--threads", type=int, default=None,
                    help="ONNX Runtime intra-op threads (default: ONNX Runtime's)")
    ap.add_argument("--stats", type=Path, default=None,
                    help="write the batch sizes the server formed here (JSON), on exit and "
                    "on SIGUSR1")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.models.model import Model
    from pytriton.triton import Triton, TritonConfig

    model_dir = args.repository / args.model
    cfg = read_config(model_dir / "config.pbtxt")
    onnx_path = model_dir / "1" / "model.onnx"
    so = ort.SessionOptions()
    if args.threads:
        so.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in cfg.input]
    out_names = [o.name for o in cfg.output]
    batches: Counter[int] = Counter()
    lock = threading.Lock()

    @batch
    def infer(**inputs):
        n = len(next(iter(inputs.values())))
        with lock:
            batches[n] += 1
        outs = session.run(out_names, {k: inputs[k] for k in in_names})
        return dict(zip(out_names, outs, strict=True))

    def spec(t) -> Tensor:
        dtype = _DTYPES[model_config_pb2_name(t.data_type)]
        return Tensor(name=t.name, dtype=dtype, shape=tuple(int(d) for d in t.dims))

    params = {k: v.string_value for k, v in cfg.parameters.items()}
    # PyTriton has no API for model-config parameters: add them (the inscope card) to the
    # config it generates, so clients read the card from the server as from tritonserver
    original = Model._get_triton_model_config

    def with_parameters(self):
        tmc = original(self)
        tmc.backend_parameters.update(params)
        return tmc

    Model._get_triton_model_config = with_parameters

    def write_stats() -> None:
        if args.stats is not None:
            with lock:
                counts = {str(k): v for k, v in sorted(batches.items())}
            tmp = args.stats.with_suffix(".tmp")
            tmp.write_text(json.dumps({"batch_sizes": counts}))
            tmp.replace(args.stats)

    def stop(signum, _frame):
        raise KeyboardInterrupt  # unwinds serve() in the main thread: a clean stop

    signal.signal(signal.SIGTERM, stop)
    if hasattr(signal, "SIGUSR1"):  # a snapshot of the batch sizes while serving
        signal.signal(signal.SIGUSR1, lambda *_: write_stats())
    config = TritonConfig(grpc_port=args.grpc_port, http_port=args.http_port,
                          metrics_port=args.metrics_port, exit_on_error=True)
    delay = cfg.dynamic_batching.max_queue_delay_microseconds
    try:
        with Triton(config=config) as triton:
            triton.bind(
                model_name=cfg.name or args.model, infer_func=infer,
                inputs=[spec(t) for t in cfg.input], outputs=[spec(t) for t in cfg.output],
                config=ModelConfig(max_batch_size=max(1, cfg.max_batch_size),
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=delay)),
                strict=True)
            print(f"serving {cfg.name} on gRPC port {args.grpc_port}", flush=True)
            triton.serve()
    except KeyboardInterrupt:
        pass
    finally:
        write_stats()
    return 0


def model_config_pb2_name(value: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(value)


if __name__ == "__main__":
    sys.exit(main())
