"""Provider choice with the real ONNX Runtime build installed here (onnxruntime-gpu on a
machine with no GPU and no CUDA libraries): the start-up line names the provider in use
and why each faster one was not, with the fix; TensorRT gets its engine cache; the GPU
benchmark runs and says 'no GPU'. No GPU is lent to these tests."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest

from inscope.detector import load_detector
from inscope.detector.providers import (
    LAST_CHOICE,
    _choice_note,
    preload_gpu_libraries,
    tensorrt_options,
    trt_cache_dir,
)

GPU_BUILD = "CUDAExecutionProvider" in ort.get_available_providers()


def test_choice_note_names_the_provider_and_each_faster_one_skipped():
    note = _choice_note("cpu", {"tensorrt": "no TensorRT", "cuda": "libcublasLt.so.13: "
                                "cannot open shared object file"})
    assert note.startswith("ONNX Runtime provider CPU (TensorRT not used: no TensorRT; "
                           "CUDA not used: libcublasLt.so.13")
    assert note.endswith("fix: pip install 'inscope[gpu]' (docs/gpu.md))")
    # CUDA in use: only TensorRT is faster
    assert _choice_note("cuda", {"tensorrt": "no TensorRT"}) == \
        "ONNX Runtime provider CUDA (TensorRT not used: no TensorRT)"
    assert _choice_note("tensorrt", {}) == "ONNX Runtime provider TensorRT"


def test_auto_on_this_machine_says_why_not_gpu():
    det = load_detector(None, provider="auto")
    assert det.provider == "cpu" and LAST_CHOICE["provider"] == "cpu"
    assert det.provider_note == LAST_CHOICE["note"]
    assert det.provider_note.startswith("ONNX Runtime provider CPU (")
    if GPU_BUILD:  # onnxruntime-gpu without CUDA libraries: the missing library is named
        assert "CUDA not used: " in det.provider_note
        assert "TensorRT not used: " in det.provider_note
        assert ".so" in LAST_CHOICE["skipped"]["cuda"] or \
            ".dll" in LAST_CHOICE["skipped"]["cuda"]
        assert "inscope[gpu]" in det.provider_note
    else:
        assert "not in this onnxruntime build" in det.provider_note


def test_explicit_cuda_names_the_fix():
    with pytest.raises(RuntimeError, match=r"pip install 'inscope\[gpu\]'"):
        load_detector(None, provider="cuda")


@pytest.mark.skipif(not GPU_BUILD, reason="needs onnxruntime-gpu (installed on Linux x86-64 "
                    "and Windows x64 by the base dependencies)")
def test_preload_reports_missing_cuda_libraries():
    msg = preload_gpu_libraries()
    assert msg is not None and "libcublas" in msg and "inscope[gpu]" in msg


def test_tensorrt_engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSCOPE_TRT_CACHE", str(tmp_path / "trt"))
    assert trt_cache_dir() == tmp_path / "trt"
    opts = tensorrt_options()
    assert opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert opts["trt_fp16_enable"] == "True"
    assert tensorrt_options(fp16=False)["trt_fp16_enable"] == "False"


def test_bench_gpu_runs_and_says_no_gpu(tmp_path):
    from benchmarks.bench_gpu import gpu_name, main

    out = tmp_path / "gpu.json"
    assert main(["--sizes", "64", "--repeats", "3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["gpu"] == gpu_name()
    assert r["io_binding"] is True and r["providers_listed"] == ort.get_available_providers()
    cpu = r["results"]["cpu"]
    assert cpu["runs"] and cpu["session_providers"] == ["CPUExecutionProvider"]
    q = cpu["sizes"]["64"]["run_ms"]
    assert 0 < q["p50"] <= q["p90"] <= q["p99"] <= q["max"]
    if r["gpu"] == "no GPU":
        assert not r["results"]["cuda"]["runs"] and r["results"]["cuda"]["reason"]


@pytest.mark.skipif(not GPU_BUILD, reason="needs onnxruntime-gpu")
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_cuda_sessions_ask_cudnn_for_heuristics(monkeypatch, provider):
    """ONNX Runtime's default cuDNN search times every algorithm at each new input size
    (0.35-0.51 s on an H200, benchmarks/results/gpu.json); inscope asks for heuristics.
    No GPU runs here, so the real InferenceSession is wrapped to see what it is asked
    for (it then fails for want of CUDA, as it must on this machine)."""
    seen: list = []
    real = ort.InferenceSession

    def spy(*args, **kw):
        seen.append(kw.get("providers"))
        return real(*args, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    with pytest.raises(RuntimeError, match="cannot run on this machine"):
        load_detector(None, provider=provider)
    cuda = [opts for chain in seen for entry in chain if isinstance(entry, tuple)
            for name, opts in [entry] if name == "CUDAExecutionProvider"]
    assert cuda and all(o["cudnn_conv_algo_search"] == "HEURISTIC" for o in cuda)
