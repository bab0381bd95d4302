"""The parts of the provider choice that decide what a user reads and what a session
runs with: ONNX Runtime's failure output boiled down to its one useful sentence (texts
recorded from onnxruntime-gpu 1.31 on this machine: no GPU, no CUDA libraries), provider
names, the TensorRT cache folder per platform, and the session options every inscope
session gets (threads, spinning), read back from real sessions of the shipped model."""

from __future__ import annotations

import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from inscope.detector import providers
from inscope.detector.onnx_detector import DEFAULT_MODEL
from inscope.detector.providers import (
    LAST_CHOICE,
    create_session,
    failure_reason,
    session_spinning,
    short_name,
    tensorrt_options,
    trt_cache_dir,
)
from inscope.enums import Spinning

GPU_BUILD = "CUDAExecutionProvider" in ort.get_available_providers()

# what ONNX Runtime printed when asked for CUDA, then for TensorRT (recorded here)
CUDA_OUTPUT = (
    "\x1b[1;31m2026-12-07 07:30:08.414204291 [E:onnxruntime:Default, provider_bridge_ort.cc:"
    "2458 operator()] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 "
    "onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : "
    "FAIL : Failed to load library /x/site-packages/onnxruntime/capi/libonnxruntime_"
    "providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No "
    "such file or directory\n\x1b[m\n\x1b[0;93m2026-12-07 07:30:08.414675303 [W:onnxruntime:"
    "Default, onnxruntime_pybind_state.cc:1295 CreateExecutionProviderFactoryInstance] "
    "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. Please "
    "install all dependencies as mentioned in the GPU requirements page (https://"
    "onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements), "
    "make sure they're in the PATH, and that your GPU is supported.\x1b[m\n")
TRT_OUTPUT = (
    "*************** EP Error ***************\n"
    "EP Error /onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc:729 void "
    "onnxruntime::python::RegisterTensorRTPluginsAsCustomOps(PySessionOptions&, const "
    "onnxruntime::ProviderOptions&) Please install TensorRT libraries as mentioned in the "
    "GPU requirements page, make sure they're in the PATH or LD_LIBRARY_PATH, and that "
    "your GPU is supported.\n when using [('TensorrtExecutionProvider', {})]\n"
    "Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.\n"
    "****************************************\n")


def test_the_missing_library_and_the_versions_wanted_are_what_is_kept():
    assert failure_reason(CUDA_OUTPUT) == (
        "libcublasLt.so.13: cannot open shared object file: No such file or directory; "
        "Require cuDNN 9.* and CUDA 13.*")


def test_a_tensorrt_failure_keeps_what_to_install():
    assert failure_reason(TRT_OUTPUT) == (
        "Please install TensorRT libraries as mentioned in the GPU requirements page")
    # both, as ORT prints them for an "auto" start, and the same sentence once only
    both = failure_reason(TRT_OUTPUT + CUDA_OUTPUT + CUDA_OUTPUT, limit=1000)
    assert both == ("Please install TensorRT libraries as mentioned in the GPU "
                    "requirements page; libcublasLt.so.13: cannot open shared object "
                    "file: No such file or directory; Require cuDNN 9.* and CUDA 13.*")


def test_a_long_reason_is_cut_at_its_limit():
    whole = failure_reason(TRT_OUTPUT + CUDA_OUTPUT, limit=1000)
    text = TRT_OUTPUT + CUDA_OUTPUT.replace("directory", "directory " + "x" * 60)
    assert len(failure_reason(text, limit=1000)) > 220
    assert failure_reason(text) == failure_reason(text, limit=1000)[:220]
    assert failure_reason(TRT_OUTPUT + CUDA_OUTPUT, limit=30) == whole[:30]


def test_an_unknown_message_gives_its_first_line_without_colour_or_stamp():
    text = ("\x1b[1;31m2026-12-07 07:30:08.4 [E:onnxruntime:Default, x.cc:1 f()] something "
            "new went wrong\x1b[m\nsecond line\n")
    assert failure_reason(text) == "something new went wrong"
    assert failure_reason("*** banner ***\n\n") == "no message"
    assert failure_reason("") == "no message"


def test_provider_short_names():
    assert short_name("CUDAExecutionProvider") == "cuda"
    assert short_name("TensorrtExecutionProvider") == "tensorrt"
    assert short_name("CPUExecutionProvider") == "cpu"
    assert short_name("OpenVINOExecutionProvider") == "openvino"  # not ours: lower-cased


def test_tensorrt_cache_folder_on_each_platform(tmp_path, monkeypatch):
    monkeypatch.delenv("INSCOPE_TRT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert trt_cache_dir() == tmp_path / "home" / ".cache" / "inscope" / "tensorrt"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "AppData" / "Local"))
    assert trt_cache_dir() == tmp_path / "AppData" / "Local" / "inscope" / "tensorrt"
    monkeypatch.delenv("LOCALAPPDATA")  # a Windows account without it: the home folder
    assert trt_cache_dir() == tmp_path / "home" / ".cache" / "inscope" / "tensorrt"
    monkeypatch.setenv("INSCOPE_TRT_CACHE", "~/engines")
    assert trt_cache_dir() == Path("~/engines").expanduser()


def test_tensorrt_keeps_its_timing_cache_beside_its_engines(tmp_path, monkeypatch):
    monkeypatch.setenv("INSCOPE_TRT_CACHE", str(tmp_path / "trt"))
    opts = tensorrt_options()
    assert opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_timing_cache_path"] == str(tmp_path / "trt")


# -- real sessions of the shipped model ---------------------------------------------------
@pytest.mark.parametrize("mode", [Spinning.OFF, Spinning.RUN, Spinning.ON])
def test_a_session_runs_with_the_threads_and_spinning_asked_for(mode):
    sess, name = create_session(DEFAULT_MODEL, "cpu", threads=2, spinning=mode)
    assert name == "cpu" and sess.get_providers() == ["CPUExecutionProvider"]
    so = sess.get_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert session_spinning(sess) is mode


def test_the_default_provider_is_auto_and_says_why_not_the_gpu():
    sess, name = create_session(DEFAULT_MODEL)
    assert name == "cpu" and LAST_CHOICE["provider"] == "cpu"
    if GPU_BUILD:  # TensorRT and CUDA were tried first, each with its reason
        assert set(LAST_CHOICE["skipped"]) == {"tensorrt", "cuda"}
        assert all(LAST_CHOICE["skipped"].values())
    for spelled in (None, "", "AUTO", " Auto"):
        if spelled == " Auto":  # not a provider name: refused, naming the choices
            with pytest.raises(ValueError, match="Unknown provider ' auto'; use 'auto'"):
                create_session(DEFAULT_MODEL, spelled)
            continue
        assert create_session(DEFAULT_MODEL, spelled)[1] == "cpu"
    assert create_session(DEFAULT_MODEL, "CPU")[1] == "cpu"


@pytest.mark.skipif(not GPU_BUILD, reason="needs onnxruntime-gpu")
def test_an_explicit_gpu_provider_that_cannot_run_says_why_in_its_error():
    with pytest.raises(RuntimeError) as e:
        create_session(DEFAULT_MODEL, "cuda")
    msg = str(e.value)
    assert msg.startswith("Execution provider 'cuda' cannot run on this machine (cuda: ")
    # the reason is ORT's own sentence (or the preload's list of missing libraries)
    assert "libcu" in msg and ".so" in msg and "None" not in msg


@pytest.mark.skipif(not GPU_BUILD, reason="needs onnxruntime-gpu")
def test_only_a_gpu_session_loads_the_cuda_libraries(monkeypatch):
    """Asking for the CPU alone never preloads CUDA (its libraries cost start time and
    memory, and a broken CUDA install must not stop a CPU run); auto does."""
    monkeypatch.setattr(providers, "_PRELOADED", {})
    create_session(DEFAULT_MODEL, "cpu")
    assert "result" not in providers._PRELOADED
    create_session(DEFAULT_MODEL, "auto")
    assert "result" in providers._PRELOADED
    assert "libcublas" in (providers._PRELOADED["result"] or "")


def test_linux_keeps_its_cache_in_the_home_folder_whatever_windows_variables_say(
        tmp_path, monkeypatch):
    monkeypatch.delenv("INSCOPE_TRT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "wine"))  # e.g. under Wine tools
    monkeypatch.setattr(sys, "platform", "linux")
    assert trt_cache_dir() == tmp_path / "home" / ".cache" / "inscope" / "tensorrt"


@pytest.mark.skipif(not GPU_BUILD, reason="needs onnxruntime-gpu (TensorRT is tried)")
def test_trying_tensorrt_makes_its_cache_folder_with_its_parents(tmp_path, monkeypatch):
    cache = tmp_path / "a" / "b" / "engines"
    monkeypatch.setenv("INSCOPE_TRT_CACHE", str(cache))
    assert create_session(DEFAULT_MODEL, "auto")[1] == "cpu"
    assert cache.is_dir()


def test_a_file_onnx_runtime_cannot_read_is_one_error_naming_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    for provider in ("cpu", "auto"):
        with pytest.raises((ValueError, RuntimeError)) as e:
            create_session(bad, provider)
        msg = str(e.value)
        if provider == "cpu":
            assert isinstance(e.value, ValueError)
            assert msg.startswith(f"ONNX Runtime cannot load {bad}: ")
            assert msg.endswith("Check that the file is a valid ONNX model (re-export it) "
                                "and that its opset is supported.")
        else:
            assert str(bad) in msg


@pytest.mark.skipif(not GPU_BUILD, reason="needs onnxruntime-gpu")
def test_the_cuda_libraries_are_looked_for_once_per_process(monkeypatch):
    """Each detector built (a benchmark builds dozens) would otherwise search the disk
    for the CUDA libraries again (ORT's ``preload_dlls``)."""
    calls = []
    real = ort.preload_dlls

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(ort, "preload_dlls", counting)
    monkeypatch.setattr(providers, "_PRELOADED", {})
    first = providers.preload_gpu_libraries()
    assert providers.preload_gpu_libraries() == first
    create_session(DEFAULT_MODEL, "auto")
    assert len(calls) == 1
