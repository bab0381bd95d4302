"""Mutation testing of the safety and control core with mutmut: do the tests bite?

mutmut plants one small bug at a time (a flipped comparison, a changed constant, a
dropped argument) in a module and runs the tests that call the mutated function; a
mutant that no test notices "survives". The score per module is ``killed / checked``
(``checked`` = ``mutants`` once a run is complete; a partial run says so: ``complete``).

The repository keeps ``acquisition/``, ``detector/`` and ``control/`` at the top and maps
them to ``inscope.*`` with setuptools package-dir, a layout mutmut cannot follow (it
mutates a copy of a source folder that must import under its own name). So each module
is run in a temporary folder holding the package as it installs (``src/inscope/...``)
plus ``tests/``; mutmut puts its mutated copy first on ``sys.path`` and the editable
install of the working tree is never imported. Nothing in the working tree is touched.

Each module runs only the test files that exercise it (mutmut further narrows each
mutant to the tests that call the mutated function), so the whole run takes minutes,
not hours, on two shared cores.

Run::

    python -m benchmarks.mutation                       # every module, ~15-25 min on 2 cores
                                                        # (+ ~33 min: micromanager,
                                                        # + ~30 min: the simulator's four)
    python -m benchmarks.mutation --module safety       # one module
    python -m benchmarks.mutation --max-children 1      # gentler on a shared machine
    python -m benchmarks.mutation --module focus --work /tmp/mut   # keep mutants + verdicts
    python -m benchmarks.mutation --module focus --work /tmp/mut --survivors
        # after adding tests: re-test only the survivors of the kept run (minutes)
    python -m benchmarks.mutation --module focus --work /tmp/mut --survivors \
        --mutants '*FocusLock*'                         # ... only some of them
    python -m benchmarks.mutation --work /tmp/mut --report   # score the kept runs

Writes ``benchmarks/results/mutation.json``: mutants, killed, score and target per
module, and every surviving mutant with its diff and the reason it survives (the
``SURVIVOR_NOTES`` below: an equivalent mutant, or the test still to add). Exits 1
when a module misses its target. Needs the ``mutation`` extra (``pip install -e
.[test,mutation]``).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import PACKAGE_DIRS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"



#: why the Micro-Manager config-reload tests are left out of the forked mutant runs
@dataclass(frozen=True)
class Target:
    """One module under mutation and the tests that guard it."""

    name: str
    path: str  # in the repository
    tests: tuple[str, ...]
    target: float  # fraction of mutants that must be killed
    # mutmut mutant-name fragments never run (mutating them only changes wording or
    # speed, not behaviour), each with the reason; they are reported, not hidden
    skip: tuple[tuple[str, str], ...] = ()
    # tests of those files never run under mutation (pytest --deselect), each with the
    # reason: mutmut runs every mutant in a process forked from the one that collected
    # the stats, and some real-hardware tests cannot run in a forked copy
    deselect: tuple[tuple[str, str], ...] = ()
    # mutmut mutant-name globs a run checks when --mutants names none (empty: all): for a
    # module whose other mutants cannot be run here in reasonable time (said at the target)
    mutants: tuple[str, ...] = ()
    # where each mutant's worker is forked from (mutmut's process_isolation): "fork", the
    # process that collected the stats (fastest), or "forkserver", a clean process that
    # only collected the tests: for tests that leave native threads behind (Micro-
    # Manager's camera and circular buffer), whose locks a fork copies in a held state
    isolation: str = "fork"


#: why tests that read the repository's own source or docs are left out of a run: the
#: mutation folder holds the package as it installs (src/inscope/...), not the checkout
_READS_TREE = ("reads the checkout's source tree or docs/ (the repository layout), which "
               "the mutation folder does not have; it checks messages and docs, not code")

TARGETS: tuple[Target, ...] = (
    Target("safety", "acquisition/safety.py",
           ("tests/acquisition/test_foundation.py", "tests/acquisition/test_guard_behaviour.py",
            "tests/acquisition/test_safety_limits.py"),
           0.90),
    Target("schema", "inscope/schema.py",
           ("tests/service/test_schema_messages.py",), 0.90),
    Target("steering", "control/steering.py",
           ("tests/control/test_steering_behaviour.py",), 0.80),
    Target("calibration", "control/calibration.py",
           # test_sim_control: save / load / apply of a calibration; test_calibration_in_loop:
           # writing it into Micro-Manager's pixel configuration (real MMCore)
           ("tests/control/test_calibration_truth.py", "tests/control/test_sim_control.py",
            "tests/control/test_calibration_in_loop.py"),
           0.80),
    # FocusLock's law on frames of known sharpness, and autofocus's flat sweeps on small
    # slides; tests/control/test_focus_lock.py (the lock on rendered cells with the
    # detector, seconds per test) is left out for speed
    Target("focus", "control/focus.py",
           ("tests/control/test_focus_behaviour.py", "tests/control/test_focus_lock_law.py",
            "tests/control/test_focus_flat_sweeps.py"),
           0.80),
    # the target refiner (registration, soft mask, touching-neighbour split); its
    # behaviour tests on synthetic nuclei, and the steering tests that steer on it
    Target("refine", "control/refine.py",
           ("tests/control/test_refine_centroid.py", "tests/control/test_refine_truth.py",
            "tests/control/test_steering_behaviour.py", "tests/control/test_duplicates.py"),
           0.70),
    Target("decode", "detector/decode.py",
           ("tests/detector/test_det_preprocess_decode.py",
            "tests/detector/test_det_ultralytics.py", "tests/detector/test_decode_values.py",
            "tests/detector/test_det_vote_calibration.py"),
           0.80),
    # the slide microscope (issue 12): its geometry (stage -> pixels, z -> planes), the
    # labels it carries as ground truth, and its one-line errors on bad files / options
    Target("slide", "acquisition/slide.py",
           # (test_user_files' pycro-manager NDTiff test starts MMCore: too slow to run
           # per mutant; the NDTiff reader is checked on ndstorage-written folders here)
           ("tests/acquisition/test_slide.py", "tests/acquisition/test_slide_truth.py",
            "tests/acquisition/test_slide_files.py", "tests/acquisition/test_slide_runtime.py"),
           # (test_slide_files reads NDTiff folders, whose reader threads hang forked
           # workers as replay's did: the fork server keeps hangs from reading as kills)
           0.80, isolation="forkserver"),
    # the tracker the steerer follows a cell with (gating, velocity, misses) and the
    # focus surface find-and-image predicts each cell's focus from
    Target("tracking", "control/tracking.py",
           ("tests/control/test_tracking.py", "tests/control/test_tracking_truth.py",
            "tests/control/test_steering_behaviour.py"),
           0.80),
    Target("focus_surface", "control/focus_surface.py",
           ("tests/control/test_focus_surface.py",), 0.80),
    # the detector's own yardstick (AP, matching, calibration error): a bug here would
    # report a wrong accuracy for every model; and the normalisation every frame gets
    Target("metrics", "detector/metrics.py",
           ("tests/detector/test_det_metrics.py", "tests/detector/test_metrics_truth.py"),
           0.80),
    Target("preprocess", "detector/preprocess.py",
           ("tests/detector/test_det_preprocess_decode.py",
            "tests/detector/test_preprocess_truth.py",
            # the sparse anchor's and the hot-pixel step's own tests
            "tests/detector/test_sparse_anchor.py", "tests/detector/test_signal_check.py"),
           0.80),
    # the camera's noise and background, the box check, hot pixels: what every frame's
    # boxes and every focus measure pass through
    Target("signal", "detector/signal.py",
           ("tests/detector/test_signal_check.py", "tests/detector/test_preprocess_truth.py",
            "tests/detector/test_det_scale.py"), 0.80),
    # the command server (every request gets one reply, stop always answered) and the
    # detections publisher, over real sockets on 127.0.0.1
    Target("zmq_api", "inscope/zmq_api.py",
           ("tests/service/test_service_zmq.py", "tests/service/test_service_fuzz.py",
            "tests/service/test_service_security.py", "tests/service/test_service_subscribers.py",
            "tests/service/test_zmq_api_truth.py"),
           0.80),
    # the live loop's control stage: tracking, steering and focus lock behind one step,
    # moves commanded without waiting, frames exposed during a move never used
    Target("control_stage", "inscope/control_stage.py",
           # (test_target_forms.py checks the docs, which the mutation folder lacks)
           ("tests/service/test_live_loop.py", "tests/control/test_settings_defaults.py",
            "tests/service/test_tour.py", "tests/service/test_control_stage_truth.py"),
           0.80),
    Target("config", "inscope/config.py",
           ("tests/service/test_service_config.py", "tests/service/test_config_values.py"), 0.80),
    # the tiles of a frame too big for one pass (each box kept by the one tile that owns
    # its centre) and the object-size estimate that rescales frames of large nuclei
    Target("tiling", "detector/tiling.py",
           ("tests/detector/test_det_preprocess_decode.py", "tests/detector/test_tiling_truth.py"),
           0.80),
    Target("scale", "detector/scale.py", ("tests/detector/test_det_scale.py",), 0.80),
    # mirror views: each view's maps read back onto the frame's cells and offsets
    Target("mirror", "detector/mirror.py", ("tests/detector/test_mirror_views.py",), 0.80),
    # the readers of users' annotations (npz, masks, YOLO, VOC, COCO, one image file):
    # a wrong pixel convention here moves every box of every evaluation and training
    # (test_det_data_yaml's training test writes progress to a stream mutmut closes:
    # its reading tests only)
    Target("datasets", "detector/datasets.py",
           ("tests/detector/test_det_datasets.py",
            "tests/detector/test_det_data_yaml.py::test_data_yaml_reads_the_asked_split",
            "tests/detector/test_det_data_yaml.py::"
            "test_data_yaml_with_a_list_file_and_missing_split"),
           0.80),
    # the AR eyepiece: the camera -> display map, its fit from a ChArUco image, the
    # rendered overlay, and the box prediction that hides the display's lag
    Target("eyepiece", "inscope/eyepiece.py",
           ("tests/service/test_eyepiece_calibration.py", "tests/service/test_service_overlay.py",
            "tests/service/test_overlay_truth.py", "tests/service/test_predict.py"),
           0.80),
    Target("overlay", "inscope/overlay.py",
           ("tests/service/test_service_overlay.py", "tests/service/test_overlay_truth.py",
            "tests/service/test_service_disk_full.py"),
           0.80),
    # the frame's pixel <-> stage map every control module steers by, and the target
    # policies (nearest, largest, score, class, id) that choose what to centre
    Target("frame", "acquisition/frame.py",
           ("tests/acquisition/test_foundation.py", "tests/acquisition/test_slide_truth.py",
            "tests/acquisition/test_frame_truth.py"),
           0.80),
    Target("targets", "control/targets.py",
           # (test_target_forms.py checks the docs, which the mutation folder lacks)
           ("tests/control/test_targets_truth.py", "tests/control/test_steering_behaviour.py"),
           0.80),
    # the live loop (frames in, detections published, control beside it), the records
    # of a run, and the demo's tour of cells
    # (the command API - status, pause, modes, target, threshold, snapshot, stop - over
    # real ZMQ sockets, and the run report)
    Target("pipeline", "inscope/pipeline.py",
           ("tests/service/test_service_pipeline.py", "tests/service/test_live_loop.py",
            "tests/service/test_events.py", "tests/service/test_pipeline_summary_truth.py",
            "tests/service/test_service_zmq.py", "tests/service/test_service_security.py"),
           0.80,
           deselect=(("tests/service/test_pipeline_summary_truth.py::"
                      "test_ctrl_c_stops_the_run_cleanly_and_says_so",
                      "sends the process SIGINT, which mutmut's own handler takes: the run "
                      "never sees it and ends at its 30 s bound, failing the stats run"),)),
    Target("records", "inscope/records.py",
           ("tests/service/test_service_records.py", "tests/service/test_records_truth.py",
            "tests/service/test_service_frame_recording.py",
            "tests/service/test_service_provenance.py"), 0.80),
    # find-and-image's arithmetic (z-stack spec, cells.csv, field grid, signal choice,
    # scan plane, z extent, one record per cell, duplicates) on its fast tests: run with
    # --mutants for those functions. One target per module (results are kept by module):
    # the whole module on its scan tests (test_sim_workflow, test_scan_hardening,
    # test_focus_flat_sweeps, test_slide_control) ran ~12 mutants a minute here, ~3.5 h
    Target("workflow_core", "control/workflow.py",
           ("tests/control/test_workflow_truth.py", "tests/control/test_duplicates.py"), 0.80),
    # the ONNX detector around the network: card checks, scale, tiling, timing
    Target("onnx_detector", "detector/onnx_detector.py",
           ("tests/detector/test_onnx_detector_truth.py",
            "tests/detector/test_det_onnx_detector.py", "tests/detector/test_detect_call_truth.py",
            "tests/detector/test_det_scale.py", "tests/detector/test_det_vote_calibration.py",
            "tests/detector/test_det_ultralytics.py", "tests/detector/test_mirror_views.py"),
           0.80),
    # score calibration (Platt / temperature) and its error measure
    Target("score_calibration", "detector/calibration.py",
           ("tests/detector/test_score_calibration_truth.py",
            "tests/detector/test_det_vote_calibration.py", "tests/detector/test_metrics_truth.py"),
           0.80),
    # recordings read back as frames (TIFF, OME-TIFF, NDTiff, video)
    # fork server: the NDTiff reader's threads, forked half-held from the process that
    # collected the stats, hung every worker of an NDTiff mutant (time-outs read as kills)
    Target("replay", "acquisition/replay.py",
           ("tests/acquisition/test_replay.py", "tests/acquisition/test_replay_metadata.py",
            "tests/acquisition/test_replay_playback.py", "tests/acquisition/test_user_files.py",
            "tests/acquisition/test_slide_files.py"), 0.80, isolation="forkserver"),
    # the AR eyepiece's calibration fit from a photo of the projected pattern
    Target("eyepiece_fit", "inscope/eyepiece_fit.py",
           ("tests/service/test_eyepiece_calibration.py", "tests/service/test_overlay_truth.py",
            "tests/service/test_eyepiece_field_error.py",
            "tests/service/test_eyepiece_fit_parts.py"),
           0.80),
    Target("tour", "inscope/tour.py",
           ("tests/service/test_tour.py", "tests/service/test_tour_choice.py",
            "tests/service/test_tour_steps.py"), 0.80),
    # the latency figures every benchmark and run summary reports
    Target("stats", "inscope/stats.py",
           ("tests/service/test_stats_truth.py", "tests/service/test_service_memory.py"), 0.80),
    Target("predict", "inscope/predict.py",
           ("tests/service/test_predict.py", "tests/service/test_predict_truth.py",
            "tests/service/test_overlay_truth.py"), 0.80),
    # the Micro-Manager path through the real MMCore and DemoCamera adapters: stage
    # moves (waited for or not), the pixel-size affine, frames and their stage stamps
    # (the GUI-only test needs Java and is skipped here, as in every run). Its mutants
    # below exclude the process's one headless core start (headless_core: left
    # unchecked): its mutants break the start every later test needs and each waits out
    # MMCore's time-outs (a first full run managed ~2 a minute). What the start is made
    # of (default_mm_dir, resolve_config, headless_config, _explain) is checked by
    # test_mm_start_parts, which starts no core. Workers come from a fork server
    # (isolation): forked from the process that collected the stats, they inherited its
    # MMCore half held (hangs read as kills; the config-reload tests aborted)
    Target("micromanager", "acquisition/micromanager.py",
           ("tests/acquisition/test_micromanager.py", "tests/acquisition/test_pymmcore_core.py",
            "tests/acquisition/test_micromanager_motion.py",
            "tests/acquisition/test_mm_version_mismatch.py",
            "tests/acquisition/test_safety_limits.py",
            "tests/control/test_calibration_in_loop.py",
            "tests/acquisition/test_mm_start_parts.py"), 0.80,
           isolation="forkserver",
           mutants=("*affine_from_mm*", "*x__as_2d*", "*x__as_list*", "*x__sequence_running*",
                    "*x__stop_sequence*", "*x__port_open*", "*x_device_interface_check*",
                    "*MicroManagerMicroscopeǁ*", "*x_affine_from_core*",
                    "*x_default_mm_dir*", "*x_resolve_config*",
                    "*x_headless_config*", "*x__explain*")),
    Target("pymmcore_core", "acquisition/pymmcore_core.py",
           ("tests/acquisition/test_pymmcore_core.py", "tests/acquisition/test_micromanager.py"),
           0.80, isolation="forkserver"),
    # what every backend shares: guarded moves, frame streams and their pacing
    Target("microscope", "acquisition/microscope.py",
           ("tests/acquisition/test_foundation.py", "tests/acquisition/test_safety_limits.py",
            "tests/acquisition/test_guard_behaviour.py", "tests/acquisition/test_micromanager.py",
            "tests/acquisition/test_micromanager_motion.py",
            # the simulated and slide microscopes are BaseMicroscope too: their moves are
            # the base class's (absolute / relative, waited / not)
            "tests/acquisition/test_simulated.py", "tests/acquisition/test_slide_runtime.py"),
           0.80, isolation="forkserver"),
    # the threaded outputs every result leaves through (publisher, recorders, overlay):
    # bounded queues that drop the oldest instead of stalling the loop, and a failing
    # output that is reported and stopped, never the loop
    Target("outputs", "inscope/outputs.py",
           ("tests/service/test_outputs_truth.py", "tests/service/test_service_subscribers.py",
            "tests/service/test_live_loop.py", "tests/service/test_service_pipeline.py",
            "tests/service/test_zmq_api_truth.py", "tests/service/test_records_truth.py",
            "tests/service/test_service_records.py", "tests/service/test_service_disk_full.py"),
           0.80),
    # the command line's glue: every flag of run / demo into the config it stands for,
    # the demo's set-up, and the exit codes and one-line errors of a run that cannot start
    Target("commands", "inscope/commands.py",
           ("tests/service/test_service_cli_flags.py", "tests/service/test_service_config.py",
            "tests/service/test_target_forms.py", "tests/service/test_service_cli_mistakes.py",
            "tests/service/test_predict.py", "tests/service/test_commands_truth.py"),
           0.80,
           deselect=tuple((test, _READS_TREE) for test in (
               "tests/service/test_service_cli_flags.py::test_hints_are_collected",
               "tests/service/test_service_cli_flags.py::"
               "test_every_flag_a_message_names_exists_where_the_message_is_read",
               "tests/service/test_service_cli_flags.py::"
               "test_docs_toml_example_is_a_valid_config",
               "tests/service/test_target_forms.py::test_docs_list_the_same_forms"))),
    # the simulated microscope every test and benchmark scores against: what a frame
    # shows (stage -> pixels, defocus blur, thick nuclei's sections, camera noise), the
    # truth it carries, the specimen's cells and the stage's motion
    Target("sim_render", "acquisition/simulated/render.py",
           ("tests/acquisition/test_simulated.py", "tests/acquisition/test_sim_camera_process.py",
            "tests/acquisition/test_sim_render_parts.py"),
           0.80),
    Target("sim_specimen", "acquisition/simulated/specimen.py",
           ("tests/acquisition/test_simulated.py", "tests/acquisition/test_sim_specimen_truth.py",
            "tests/acquisition/test_sim_render_parts.py"), 0.80),
    Target("sim_microscope", "acquisition/simulated/microscope.py",
           ("tests/acquisition/test_simulated.py", "tests/acquisition/test_sim_camera_process.py",
            "tests/acquisition/test_stream_pacing.py",
            "tests/acquisition/test_sim_motion_truth.py"), 0.80),
    Target("sim_motion", "acquisition/simulated/motion.py",
           ("tests/acquisition/test_simulated.py", "tests/acquisition/test_stream_pacing.py",
            "tests/acquisition/test_sim_motion_truth.py"),
           0.80),
    Target("stream", "acquisition/stream.py",
           ("tests/acquisition/test_stream_pacing.py", "tests/acquisition/test_foundation.py",
            "tests/acquisition/test_replay.py"), 0.80),
    # who may talk to a service bound beyond loopback (CURVE keys, the allowed-clients
    # folder, the loopback test that decides whether CURVE is required)
    Target("curve", "inscope/curve.py",
           ("tests/service/test_service_security.py", "tests/service/test_curve_keys.py"),
           0.80),
    # which ONNX Runtime provider really runs (GPU when it loads, the CPU otherwise), the
    # session's threads and spinning
    Target("providers", "detector/providers.py",
           ("tests/detector/test_det_gpu_providers.py", "tests/detector/test_det_onnx_detector.py",
            "tests/detector/test_onnx_detector_truth.py", "tests/detector/test_providers_parts.py"),
           0.80),
    # inscope inside the lab's own acquisition software: boxes on each MDA frame, the
    # adaptive MDA (follow-ups queued from detections, blocking or in its own thread),
    # pycro-manager's image processor, the napari view (real MMCore, Qt offscreen:
    # forked from a clean process)
    Target("integration_mda", "inscope/integrations/pymmcore_plus_mda.py",
           ("tests/integrations/test_pymmcore_plus_mda.py",), 0.80, isolation="forkserver"),
    Target("integration_pycromanager", "inscope/integrations/pycromanager_processor.py",
           ("tests/integrations/test_pycromanager_processor.py",), 0.80,
           isolation="forkserver"),
    Target("napari_view", "inscope/napari_view.py",
           ("tests/integrations/test_napari_view.py",), 0.80, isolation="forkserver"),
    # the no-learning baseline detector (the fallback when no model ships, and the
    # detector of the Micro-Manager tests), the simulated camera's own process, and the
    # words every config, flag and command takes (modes, targets, backends, spinning)
    Target("classical", "detector/classical.py",
           ("tests/detector/test_det_classical.py",), 0.80),
    Target("camera_process", "acquisition/simulated/camera_process.py",
           ("tests/acquisition/test_sim_camera_process.py",
            "tests/acquisition/test_simulated.py"), 0.80, isolation="forkserver"),
    Target("enums", "inscope/enums.py",
           ("tests/test_enums.py", "tests/service/test_target_forms.py"), 0.80,
           deselect=tuple((test, _READS_TREE) for test in (
               "tests/test_enums.py::test_documented_modes_and_backends_are_exactly_the_enums",
               "tests/test_enums.py::test_documented_statuses_and_stamps_are_members",
               "tests/test_enums.py::test_no_module_spells_an_enum_again",
               "tests/service/test_target_forms.py::test_docs_list_the_same_forms"))),
    # calibrate / scan's way in: the scan's argument checks (one line each, before any
    # hardware), the backend options and soft limits a command opens its microscope
    # with, and the detector it loads. run_scan / run_calibrate / register (argparse)
    # are left out of the default run: each mutant runs whole scans on the headless
    # core and the slide (name them with --mutants to run them)
    Target("control_cli", "control/cli.py",
           ("tests/control/test_scan_hardening.py", "tests/control/test_control_cli.py",
            "tests/control/test_slide_control.py", "tests/acquisition/test_factory_open.py",
            "tests/service/test_fiji_calibration.py", "tests/control/test_control_cli_parts.py"),
           0.80, isolation="forkserver",
           mutants=("*x__scan_arg_error*", "*x_open_from_args*", "*x_limits_from_args*",
                    "*x_load_detector_for*")),
    # the service's assembly and run: a build that fails closes what it opened, every
    # socket bound before anything runs, Ctrl-C / SIGTERM / a dead command server stop
    # the stage, and the summary is never lost (written atomically, or printed)
    Target("service", "inscope/service.py",
           ("tests/service/test_service_build.py", "tests/service/test_service_fuzz.py",
            "tests/service/test_service_security.py", "tests/service/test_service_cli.py",
            "tests/service/test_service_values.py", "tests/service/test_service_provenance.py",
            "tests/service/test_service_cli_mistakes.py",
            "tests/service/test_commands_truth.py", "tests/service/test_service_config.py",
            "tests/service/test_predict.py", "tests/service/test_service_summary.py",
            "tests/service/test_service_parts.py"), 0.80,
           # build_service and run_service (354 of its 847 mutants) are left out of a
           # default run: every one of their mutants runs ~35 s of real services (sockets,
           # the simulated camera, Ctrl-C in a subprocess), 3.5 h on two cores. Name them
           # with --mutants '*build_service*' to run them.
           mutants=tuple(f"inscope.service.x{f}__mutmut_*" for f in (
               "_format_summary", "_write_summary", "_failed_outputs", "__close_parts",
               "ǁServiceǁclose", "__open_with_fallback", "__start_with_fallback",
               "__end_context", "_load_detector_for", "_open_scope", "_progress_line"))),
    # every subcommand's way to a microscope: the backend options (-o key=value) and the
    # backend they open
    # (the Micro-Manager tests start the real MMCore: forked from a clean process)
    Target("factory", "acquisition/factory.py",
           ("tests/acquisition/test_factory_options.py", "tests/acquisition/test_factory_open.py",
            "tests/acquisition/test_slide.py", "tests/acquisition/test_replay.py",
            "tests/acquisition/test_micromanager.py::test_factory_headless_and_options",
            "tests/acquisition/test_micromanager.py::test_factory_headless_config_names"),
           0.80, isolation="forkserver"),
)

_GPU_ONLY = ("GPU only: the path of a GPU provider that starts (or raises instead of "
             "falling back); no GPU or CUDA library is lent to the tests")
_CPU_BUILD_ONLY = ("CPU-only onnxruntime only: the tests run on onnxruntime-gpu, where every "
                   "provider is listed")

#: Why a surviving mutant survives: mutant name -> (a fragment of its diff, the reason).
#: mutmut numbers mutants in source order, so after an edit a number may name another
#: mutant: a note applies only while its fragment is still in the diff. Survivors without
#: a note are classified by :func:`_reason` (wording only) or reported as unexplained.
_EQ_FALSY = "equivalent: allow_nan=None is falsy, which json treats as False"
_EQ_NO_NAN = ("equivalent: this is the fallback that has already turned every NaN into "
              "null, so allow_nan no longer matters")
_EQ_TRACK_IDS = ("equivalent: the message takes each detection's track id from the ids "
                 "matched once (track_ids) and uses the tracks only to match them; without "
                 "the ids it matches the same tracks again (slower, the same ids)")
_EQ_TRACK_BOX = ("equivalent for every box the tracker makes (1-D, 4 floats): the dtype "
                 "and shape given are what they already have")
_EQ_RESET = ("equivalent: reset before any move; the next move sets it again before it "
             "is read (_stale returns early while no move is pending)")
_TODO_LOCATE = ("a test to add: the search hint (track prediction, not the last fix) and "
                "the centroid update only matter for a target that moves further than the "
                "search window between frames; the refined tests steer to still cells")
_EQ_ONE_SAMPLE = ("equivalent: noise comes only from measurements of more than one frame; "
                  "with samples > 1 the list holds exactly samples >= 2 values here, with "
                  "samples = 1 the noise is 0 either way")
_EQ_CYCLES = ("equivalent: every cycle starts in _start_cycle, which sets _cycles = 0, so "
              "the getattr default is never used")
_EQ_REF = ("equivalent: a lock that has just converged has no reference yet, and the "
           "reference is not used in the other states")
_INSENSITIVE_STRETCH = ("insensitive: the stretch before Otsu (its percentiles, clip, "
                        "scale) does not move the threshold between nuclei and background "
                        "enough to change the median size; the tests hold the estimate "
                        "within a tenth on discs of 8-100 px")
_EQ_OTSU = "equivalent: with THRESH_OTSU OpenCV ignores the threshold given"
_TINY_SIDE = ("equivalent except for a frame under 2 x the copy factor on one side (a few "
              "pixels), which cannot hold three objects")
_EMPTY_SAMPLE = ("not reached: the guard for a contrast sample with no background or no "
                 "object pixel, which a frame with three objects of >= 4 px (blurred to "
                 "several pixels) and a background does not give; it keeps np.median off "
                 "an empty array")
_EQ_NO_HOT = ("equivalent: without the key normalise lowers hot pixels itself, and the copy "
              "has none left to lower (without_hot_pixels ran first)")
_CUT_MINORITY = ("insensitive: objects cut by the crop's edge are a minority of its outlines "
                 "and the median holds (the outline only has to tell 1.5x from 2-5x)")
_INSENSITIVE_OUTLINE = ("insensitive: the outline test tells whole objects (1.05-1.54x their "
                        "Otsu size) from texture (1.9-5.3x); an outline level a few grey "
                        "values off does not move the median across that gap (the tests pin "
                        "both sides of it)")
_EDGE_BOUNDARY = ("boundary: an object starting one pixel inside the crop's edge (not "
                  "cut) is left out too")
_EQ_CV_DEFAULT = "equivalent: the value given is OpenCV's default (8-connectivity, bilinear)"
_EQ_SAME_SIZE = "equivalent: resizing to the frame's own size returns the frame"
_EQ_STRICT_IDS = ("equivalent: one track id per box centre by construction (both come from "
                  "the same boxes)")
_BOUNDARY_TIME = ("boundary at exact equality of exposure times in seconds (floats) with "
                  "the window's edge")
_DEFAULT_TUNING = ("a default tuning value (the fit window and fewest points, set from "
                   "benchmarks/bench_eyepiece_prediction.py and documented); tests set "
                   "their own and check the behaviour of each")
_NEEDS_DISPLAY = ("needs a display: with none (CI, this VM) the probe window cannot open, "
                  "so the test checks only the no-display answer")
_EQ_STRICT = ("equivalent: the zipped sequences have equal lengths by construction (one "
              "owned range per tile start, one boundary more than ranges), so strict only "
              "guards against a future change")
_MM_MARGIN = ("a test to add: the window of two exposures before a frame's read-out "
              "matters only when another thread saw the end of a move during that "
              "exposure; the demo adapters answer busy queries only between two images "
              "(one lock per adapter module), so no test here can end a move inside one")
_MM_END_NOW = ("equivalent: the end of the window defaults to now, a few microseconds "
               "after the read-out stamp")
_MM_COUNT = ("equivalent for every camera behind MMCore: each image is tagged with its "
             "ImageNumber; the count stands in only for a tag object that is not a dict "
             "(the Java GUI's bridge, which cannot run here)")
_MM_BRIDGE_TAGS = ("needs the Java GUI's bridge, whose tags are not a dict (cannot run "
                   "here); through MMCore every image has a dict of tags")
_MM_STAMP = ("equivalent: a Frame without a read-out stamp is stamped when it is made, "
             "microseconds after the image was read")
_EQ_FALSY_FLAG = "equivalent: None is as false as False where the flag is read"
_MM_CACHE_RESET = ("equivalent: the empty reading is never used, a move made here reads "
                   "the stage again before any frame does (wait, or a moving frame)")
_MM_POS_T = ("equivalent: the first reading happens while no position is cached, so its "
             "age is not looked at")
_MM_LOCAL_PORT = ("equivalent on 127.0.0.1: a closed local port refuses at once; the "
                  "timeout only bounds a connection that hangs (a firewall dropping "
                  "packets), which a test cannot make locally")
_MM_ONE_CORE = ("equivalent in the tests: the one headless core of the process is started "
                "with the default adapters and the demo config, which is what None gives; "
                "a second adapter folder would tell")
_MM_GUI = ("needs the Micro-Manager GUI (Java) with its pycro-manager server, which "
           "cannot run here: these lines run only once a GUI's core has answered "
           "(test_gui_snap_and_position runs them with --run-mm-gui)")
_EQ_ITER_STOP = ("equivalent in what is returned: close() closes the slot right after "
                 "it stops the producer, and a closed slot answers at once; only how long "
                 "an iteration waits during close()'s join differs")
_EQ_CLOCK_TIE = "boundary at exact equality of two clock readings: equivalent in practice"
_EQ_POP_NONE = "equivalent: bool(None) is False, the default it replaces"


_EQ_PROTOCOL = ("equivalent: the body of a typing.Protocol method never runs; every "
                "backend is a BaseMicroscope, whose defaults the tests pin")
_LOG_SETUP = ("untestable in the test process: pytest's log capture has already given the "
              "root logger a handler, so logging.basicConfig does nothing there; the level "
              "-v sets shows only in a fresh process (a subprocess, which mutmut cannot "
              "see)")
_HELP_EXAMPLE = ("--help text only: the example a flag's help shows (-o KEY=VALUE, "
                 "--exposure-ms)")
_BRIGHT = ("insensitive: the 8-bit copy only places Otsu's threshold between the "
           "background and the pattern's white, and these variants still put it there and "
           "still give a level at or above the white; the tests check the outcome (a small "
           "bright patch keeps its greys, a display on 1 % of a 2048 x 2048 camera calibrates)")
_EMPTY_FIELD = ("equivalent unless the display's footprint misses the camera field (zero "
                "area), and then _drawable_polygon returns the whole field")
SURVIVOR_NOTES: dict[str, tuple[str, str]] = {
    # detector/mirror.py
    "x_average_views__mutmut_13": ("astype(None", "equivalent in result: the maps are "
                                   "averaged in float64 instead of float32, and the "
                                   "decoding reads either"),
    "x_check_views__mutmut_7": ("ok = None", "equivalent: None is as false as False"),
    # detector/onnx_detector.py, the mirror views' run
    **{f"xǁOnnxDetectorǁ{f}__mutmut_{n}": ("session.run(None", "equivalent: None asks for "
                                           "every output in the graph's order, which is "
                                           "what _out_names lists")
       for f, n in (("_run", 5), ("_run_mirrored", 25), ("_run_mirrored", 39))},
    "xǁOnnxDetectorǁ_run_mirrored__mutmut_9": ("x.shape[+2]", "equivalent: the input is "
                                                "(1, C, H, W), so index 2 is index -2"),
    **{f"xǁOnnxDetectorǁ{f}__mutmut_{n}": ("zip(", "equivalent: the names and the outputs "
                                           "(or every view's outputs) are the same length; "
                                           "strict only checks it")
       for f, n in (("_run", 12), ("_run", 15), ("_run", 16), ("_run_mirrored", 34),
                    ("_run_mirrored", 36), ("_run_mirrored", 37), ("_run_mirrored", 54),
                    ("_run_mirrored", 57), ("_run_mirrored", 58))},
    "x__check_enlarge__mutmut_20": ("ok = None", "equivalent: None is falsy, as False"),
    **{f"x__say_scale__mutmut_{n}": (frag, "equivalent: a factor of exactly 1 returned "
                                     "before this line, so f >= 1 is f > 1 here")
       for n, frag in ((40, "and f >= 1"), (76, 'if f >= 1 else "shrunk"'))},
    # detector/signal.py
    **{f"x_without_hot_pixels__mutmut_{n}": (frag, "equivalent: _OFFSETS holds every "
                                              "sign, so the same eight neighbours are read "
                                              "in another order, and the partition does "
                                              "not care")
       for n, frag in ((106, "r - dy"), (107, "c - dx"))},
    **{f"x_without_hot_pixels__mutmut_{n}": (frag, "equivalent in result: the margin on "
                                              "the cheap pre-filter only narrows the "
                                              "candidates; each is then judged exactly "
                                              "against its second-brightest neighbour plus "
                                              "the margin (the tests pin those values)")
       for n, frag in ((13, "margin >= 0"), (45, "margin >= 0"), (46, "margin > 1"),
                       (47, "cv2.add(None, margin"), (49, "dst=None)"),
                       (52, "cv2.add(lower, margin, )"))},
    **{f"x_without_hot_pixels__mutmut_{n}": (frag, "equivalent: where the neighbour is "
                                              "outside the frame np.where takes the low "
                                              "value, so the clip only keeps the index "
                                              "legal, which a negative index also is")
       for n, frag in ((125, "rr.clip(None"), (132, "cc.clip(None"))},
    **{f"x_background_level__mutmut_{n}": (frag, "equivalent: only the 5th percentile is "
                                            "read; the high one and a subsample stride of "
                                            "5 instead of 4 leave it (to the tests' "
                                            "tolerance) where it is")
       for n, frag in ((8, "5.0, 4)"), (9, "50.0, )"), (11, "51.0"), (12, "50.0, 5)"))},
    **{f"x_noise_sigma__mutmut_{n}": (frag, "equivalent: the sample read backwards has "
                                       "the same lower quartile")
       for n, frag in ((30, "+(-d.size"), (32, "-(+d.size"))},
    # control/refine.py
    **{f"x__subpixel__mutmut_{n}": (frag, "equivalent: the precomputed pseudo-inverse and "
                                     "lstsq solve the same least-squares fit; the "
                                     "condition only picks the faster one")
       for n, frag in ((40, "i1 + i0 =="), (42, "j1 + j0 =="), (43, "!= 2 * k + 1"),
                       (44, "2 * k - 1:"), (45, "2 / k + 1"), (46, "3 * k + 1"),
                       (47, "2 * k + 2"))},
    # integrations/pycromanager_processor.py
    **{f"xǁDetectionProcessorǁ__call____mutmut_{n}": (frag, "equivalent under "
                                                       "pycro-manager's FIFO event queue: "
                                                       "the end (None) is queued after "
                                                       "every follow-up already queued, "
                                                       "and first-round events run first")
       for n, frag in ((117, "self._pending = len(new) -"), (121, "(counted) or True"),
                       (122, "(2 if counted else 0)"), (123, "(1 if counted else 1)"),
                       (130, "self._pending <= 1"))},
    "xǁDetectionProcessorǁacquire__mutmut_22": ("self._pending = len(events)",
                                                 "equivalent for one acquire() per "
                                                 "processor, the documented use"),
    **{f"xǁDetectionProcessorǁ{f}__mutmut_{n}": (frag, "equivalent: pycro-manager passes "
                                                  "its event queue to a three-argument "
                                                  "image processor, so the one kept from "
                                                  "acquire() is not read")
       for f, n, frag in (("__call__", 108, "(event_queue is not None) or True"),
                          ("__init__", 16, 'self._queue: Any = ""'),
                          ("acquire", 26, "self._queue = None"),
                          ("acquire", 27, "getattr(None,"),
                          ("acquire", 31, 'getattr(acq, "_event_queue", )'),
                          ("acquire", 32, "XX_event_queueXX"),
                          ("acquire", 33, "_EVENT_QUEUE"))},
    # factory.py
    **{f"x_open_microscope__mutmut_{n}": (frag, "GUI only: the Micro-Manager GUI backend "
                                          "connects to a running Micro-Manager (not here); "
                                          "without its limits a real stage refuses every "
                                          "move (require_limits)")
       for n, frag in ((127, "connect(limits=None,"), (128, "dry_run=None, **options)"),
                       (129, "connect(dry_run=dry_run, **options)"),
                       (130, "connect(limits=lim, **options)"))},
    **{f"x_open_microscope__mutmut_{n}": (frag, "equivalent: require_limits only matters "
                                          "when no limits are given, and this guard has "
                                          "them")
       for n, frag in ((26, "require_limits=None"), (29, "MoveGuard(limits=lim, dry_run="),
                       (31, "require_limits=True"))},
    **{f"x_open_microscope__mutmut_{n}": (frag, "log only: the deprecation warning on "
                                          "another logger (it still reaches the root)")
       for n, frag in ((81, "getLogger(None)"), (82, "XXinscopeXX"), (83, '"INSCOPE"'))},
    **{f"x_open_microscope__mutmut_{n}": (frag, "a test to add: the old 'config' name's "
                                          "value lost shows only on a core started with "
                                          "another config (one core start per process; "
                                          "the tests' core has the demo's)")
       for n, frag in ((90, "old = None"), (95, 'setdefault("mm_config", None)'),
                       (97, 'setdefault("mm_config", )'))},
    # providers.py: the GPU paths run only where CUDA / TensorRT load (no GPU is lent
    # to the tests: bench_gpu and the device checks cover them there)
    **{f"x_create_session__mutmut_{n}": (frag, _GPU_ONLY) for n, frag in (
        (99, "InferenceSession(path, None,"), (102, "InferenceSession(path, providers=chain)"),
        (104, "session_options(None, spinning)"), (105, "session_options(threads, None)"),
        (107, "session_options(threads, )"), (108, "errors[name] = None"),
        (109, "failure_reason(None)"), (110, '"\\n" - str(e)'), (111, '- "\\n" + str(e)'),
        (112, '"XX\\nXX"'), (113, "str(None)"), (114, "break"), (115, "active = None"),
        (119, "_record(None, errors)"), (120, "_record(name, None)"), (121, "_record(errors)"),
        (122, "_record(name, )"), (52, "XXCPUExecutionProviderXX"),
        (53, "cpuexecutionprovider"), (54, "CPUEXECUTIONPROVIDER"),
        (68, "XXCPUExecutionProviderXX"), (69, "cpuexecutionprovider"),
        (70, "CPUEXECUTIONPROVIDER"))},
    **{f"x_create_session__mutmut_{n}": (frag, _CPU_BUILD_ONLY)
       for n, frag in ((39, "errors[name] = None"), (45, "break"))},
    **{f"x_create_session__mutmut_{n}": (frag, "a test to add: which of two texts naming "
                                         "the missing libraries (ORT's or the preload's) "
                                         "a skipped provider shows")
       for n, frag in ((123, "msg = None"), (125, "(msg) and False"), (126, "(msg) or True"),
                       (128, 'preload_error and "falls back'))},
    "x_create_session__mutmut_2": ('provider: str = "AUTO"', "equivalent: the provider "
                                   "name is lower-cased before use"),
    "x_create_session__mutmut_11": ('(provider or "AUTO")', "equivalent: the provider "
                                    "name is lower-cased before use"),
    "x_create_session__mutmut_6": ("set_default_logger_severity(4)", "log only: ORT's "
                                   "own console messages (errors or fatal only)"),
    "x_session_options__mutmut_5": ("log_severity_level = 4", "log only: ORT's own console "
                                    "messages (errors or fatal only)"),
    "x_create_session__mutmut_29": ('preload_error = ""', "equivalent: read only as "
                                    "'preload_error or ...', where '' is None"),
    **{f"x_create_session__mutmut_{n}": (frag, "equivalent here: a CPU session given the "
                                         "GPU chain's options, or none, is the same CPU "
                                         "session (ORT 1.31 ignores provider options it "
                                         "does not take and defaults to the CPU)")
       for n, frag in ((47, '(name == "cpu") and False'), (50, 'name == "XXcpuXX" else'),
                       (51, 'name == "CPU" else'), (77, "providers=None)"),
                       (80, "+                                            )"))},
    **{f"x_create_session__mutmut_{n}": (frag, "equivalent in effect: the CPU then goes "
                                         "through the GPU branch, which starts it the "
                                         "same way; only an unreadable file's error "
                                         "differs (tested: it names the file either way)")
       for n, frag in ((72, 'if name == "XXcpuXX":'), (73, 'if name == "CPU":'))},
    "x_create_session__mutmut_85": ("None) from None", "a test to add: the message of a "
                                    "CPU session's load error (the test checks it on "
                                    "'cpu', which this mutant still passes through the "
                                    "RuntimeError of 'auto')"),
    **{f"x_session_options__mutmut_{n}": (frag, "killed in effect: ONNX Runtime aborts the "
                                          "test process (a C++ exception on a null "
                                          "string), which mutmut reports as 'suspicious'")
       for n, frag in ((11, "add_session_config_entry(None,"),
                       (12, "(SPINNING_KEY, None)"), (20, "add_session_config_entry(None,"),
                       (21, "(SPINNING_STOP_KEY, None)"))},
    "x_preload_gpu_libraries__mutmut_35": ("missing[:4]", "equivalent here: three "
                                           "libraries are missing on this machine"),
    "x_preload_gpu_libraries__mutmut_38": ("result = None", _GPU_ONLY),
    "x_preload_gpu_libraries__mutmut_6": ('result: str | None = ""', "equivalent: read "
                                          "only as 'preload_error or ...'"),
    "x_preload_gpu_libraries__mutmut_7": ('hasattr(ort, "preload_dlls") or', _CPU_BUILD_ONLY),
    "x_failure_reason__mutmut_49": ('rindex("Please install")', "equivalent: ORT's lines "
                                    "say 'Please install' once"),
    "x__choice_note__mutmut_3": ("(name in AUTO_ORDER) or True", "equivalent: every "
                                 "provider chosen is in AUTO_ORDER"),
    **{f"x__choice_note__mutmut_{n}": (frag, "Windows only: a missing .dll")
       for n, frag in ((17, "XX.dllXX"), (18, ".DLL"))},
    # curve.py
    "x_is_loopback__mutmut_3": ('strip("XX[]XX")', "equivalent for bind addresses: an IP "
                                "address holds no X, and no loopback name begins or ends "
                                "with one"),
    **{f"x_register__mutmut_{n}": ("+                       )", "--help layout only: the "
                                   "subcommand's help keeps argparse's default formatter")
       for n in (43, 75)},
    "xǁAuthenticatorǁ__init____mutmut_5": ("configure_curve(location=", "equivalent: "
                                           "pyzmq's configure_curve defaults to domain "
                                           "'*', all domains"),
    # inscope/eyepiece_fit.py
    **{f"x__read__mutmut_{n}": (frag, "equivalent, or wording only: a reading with no "
                                "corners is only read for its counts (under 8 corners: no "
                                "fit), and a count off by one shows only in the refusal's "
                                "wording")
       for n, frag in ((26, "np.zeros(0, int), None, 0, 0.0"), (28, "0, None)"),
                       (34, "np.zeros(0, None), np.zeros((0, 2)), 0, 0.0"),
                       (36, "np.zeros(0, ), np.zeros((0, 2)), 0, 0.0"),
                       (37, "np.zeros(1, int), np.zeros((0, 2)), 0, 0.0"),
                       (39, "np.zeros((1, 2)), 0, 0.0"), (40, "np.zeros((0, 3)), 0, 0.0"),
                       (42, "np.zeros((0, 2)), 0, 1.0)"), (118, "cc is None and len(ci)"),
                       (119, "ci is None and cc is None"), (123, "len(ci) == 1"),
                       (125, "np.zeros(0, int), None, len(mi)"),
                       (133, "np.zeros(0, None), np.zeros((0, 2)), len(mi)"),
                       (135, "np.zeros(0, ), np.zeros((0, 2)), len(mi)"),
                       (136, "np.zeros(1, int), np.zeros((0, 2)), len(mi)"),
                       (138, "np.zeros((1, 2)), len(mi)"), (139, "np.zeros((0, 3)), len(mi)"))},
    "x__read__mutmut_43": ("mi is None and not len(mi)", "equivalent: OpenCV gives an empty "
                           "array, not None, when it finds no marker"),
    **{f"x__read__mutmut_{n}": (frag, "equivalent: the two sequences have the same length")
       for n, frag in ((66, "strict=None"), (69, "zip(mc, once, )"), (70, "strict=False"))},
    "x__read__mutmut_75": ("reshape(-1, )[once]", "equivalent: detectBoard takes the marker "
                           "ids as a column or a row"),
    "x__read__mutmut_9": ("cv2.flip(img8, 2)", "equivalent: any positive flip code flips "
                          "left-right"),
    "x__read__mutmut_10": ("upsample >= 1", "equivalent: resizing by 1 gives the image"),
    "x__read__mutmut_1": ("upsample: int = 2", "equivalent: every call gives upsample"),
    **{f"x__read__mutmut_{n}": (frag, "insensitive: the side of a square marker is the mean "
                                "of its edges; three of the four, or one counted twice, give "
                                "the same to the message's resolution")
       for n, frag in ((107, "axis=1, ), axis=2)"), (109, "quads[:, :2]"))},
    "x__read__mutmut_96": (".mean()) * upsample", "a test to add: a refusal whose best "
                           "reading is the upsampled one (the square size it gives is then "
                           "4 x too large)"),
    "x__read__mutmut_164": ("pts, None, side)", "a test to add: two readings with the same "
                            "corner count compared by their markers (None cannot be)"),
    **{f"xǁCharucoPatternǁcorner_positions__mutmut_{n}": (frag, "equivalent: adding the "
                                                          "float64 origin makes the corners "
                                                          "float64 anyway")
       for n, frag in ((3, "getChessboardCorners(), None)"),
                       (5, "getChessboardCorners(), )"))},
    **{f"x__bright_level__mutmut_{n}": (frag, _BRIGHT) for n, frag in (
        (3, "if top < lo"), (7, "None, 255)"), (8, "0, None)"), (13, "(sample + lo)"),
        (15, "(256.0 /"), (16, "(top + lo)"), (17, "1, 255).astype"),
        (18, "0, 256).astype"), (21, "threshold(grey, None,"), (22, "grey, 0, None,"),
        (28, "threshold(grey, 1,"), (29, "grey, 0, 256,"), (32, "grey >= t"),
        (33, ") and False else top"))},
    "x__bright_level__mutmut_34": (") or True else top", "equivalent: the brightest pixel "
                                   "maps to 255, above any Otsu threshold, so the bright "
                                   "side is never empty"),
    "x__as_2x3__mutmut_7": (") or True else m", "equivalent: the first two rows of a 2 x 3 "
                            "matrix are the matrix"),
    **{f"x__detectors__mutmut_{n}": (frag, "equivalent: detectBoard is given the markers "
                                     "the ArucoDetector found, so the CharucoDetector's "
                                     "own marker parameters are not used")
       for n, frag in ((15, "CharucoDetector(board, None"), (16, "CharucoParameters(), None"),
                       (19, "CharucoParameters(), )"))},
    "x__detectors__mutmut_4": ("cornerRefinementMethod = None", "a test to add: sub-pixel "
                               "marker corners move the fitted map by hundredths of a pixel "
                               "on the rendered patterns, under what the tests resolve"),
    **{f"x__fit_candidate__mutmut_{n}": (frag, "equivalent: OpenCV's binding reads None, "
                                         "or the argument left out, as its default, and "
                                         "estimateAffine2D's default method is RANSAC")
       for n, frag in ((6, "method=None"), (12, "estimateAffine2D(disp, cam, "
                                               "ransacReprojThreshold"))},
    **{f"x__fit_candidate__mutmut_{n}": (frag, "insensitive: OpenCV's default (2000 "
                                         "iterations, confidence 0.99; None reads as it) "
                                         "or one iteration more finds the same consensus "
                                         "on readings with misread corners (the outlier "
                                         "tests of test_eyepiece_fit_parts pass)")
       for n, frag in ((8, "maxIters=None"), (9, "confidence=None"),
                       (14, "+                                  confidence=0.999)"),
                       (15, "maxIters=4000, )"), (17, "maxIters=4001"))},
    "x__fit_candidate__mutmut_122": ('"IJ,JK,IK->I"', "equivalent: einsum subscripts may be "
                                     "upper case"),
    "x__fit_candidate__mutmut_158": ("m[:, :2]) <= 0)", "equivalent except for a singular "
                                     "map (determinant exactly 0), which no reading gives"),
    **{f"x__fit_candidate__mutmut_{n}": (frag, _EMPTY_FIELD) for n, frag in (
        (168, "(field_area > 0) or True"), (170, "field_area >= 0"),
        (171, "field_area > 1"), (172, "else 1.0)"))},
    **{f"x__fit_candidate__mutmut_{n}": (frag, "insensitive: a degree of freedom more or "
                                         "less moves the 95 % error by a few per cent, "
                                         "under what the coverage test resolves")
       for n, frag in ((72, "2 * n - 7"), (73, "2 * n - 6, 2)"))},
    "x__lstsq_affine__mutmut_9": ("lstsq(x, dst, )", "equivalent: rcond=None is numpy's "
                                  "default"),
    "x__drawable_polygon__mutmut_37": ("reshape(-1, 2, 2)", "equivalent: cv2.transform maps "
                                       "each 2-channel point alike in any array shape"),
    **{f"x__drawable_polygon__mutmut_{n}": (frag, _EMPTY_FIELD) for n, frag in (
        (70, "area <= 0 and poly"), (71, "area < 0 or"), (72, "area <= 1 or"))},
    **{f"x_render_camera_view__mutmut_{n}": (frag, "equivalent: GaussianBlur takes a None "
                                             "kernel size as (0, 0): from sigma")
       for n, frag in ((20, "GaussianBlur(src, None"), (43, "GaussianBlur(cam, None"))},
    **{f"x_render_camera_view__mutmut_{n}": (frag, "equivalent: INTER_LINEAR is "
                                             "warpAffine's default")
       for n, frag in ((34, "flags=None"), (38, "(w, h), )"))},
    "x_render_camera_view__mutmut_53": ("noise >= 0", "equivalent: noise of sigma 0 adds 0"),
    "x_to_uint8__mutmut_28": ("f[::2, ::3]", "insensitive: a stride-3 sample's percentiles "
                              "are the stride-2 sample's within what the tests resolve; the "
                              "stride is a speed choice"),
    "x_to_uint8__mutmut_37": ("hi - lo < 1e-6", "boundary at exact equality: a uniform image "
                              "has hi - lo = 0, under the tolerance either way"),
    "x_to_uint8__mutmut_45": ("max(abs(hi), 2.0)", "differs only for an image whose whole "
                              "range is under 2e-6 (a float image scaled to [0, 1e-6])"),
    "x_fit_pattern__mutmut_4": ("img8.shape[:3]", "equivalent: the 8-bit image is 2-D"),
    **{f"x_fit_pattern__mutmut_{n}": (frag, "insensitive: which readings are tried, or "
                                      "which of two equal readings is kept, changes the "
                                      "fit by less than the tests resolve")
       for n, frag in ((11, "for upsample in (2, 2)"), (37, ">= fits[flipped]"),
                       (39, "len(rd.ids) > 0.5"), (41, ">= 1.5 *"))},
    "x_fit_pattern__mutmut_63": ("corners_used <= MIN_INLIER", "boundary at exact "
                                 "equality: a reading where exactly 90 % of the corners "
                                 "agree (36 of 40); a board partly seen displaced, under "
                                 "90 %, is refused (test_eyepiece_fit_parts)"),
    **{f"x_fit_pattern__mutmut_{n}": (frag, "wording only: which corner count the "
                                      "ambiguous-pattern message gives for each reading")
       for n, frag in ((54, "fits[True], fits[True]"), (55, "fits[False], fits[False]"))},
    **{f"x__not_found_message__mutmut_{n}": (frag, "a test to add: the boundary between "
                                             "the 'more, smaller squares' and the "
                                             "'fewer, larger squares' advice")
       for n, frag in ((23, "square_cam * 6"), (24, "square_cam * 5 >="))},
    **{f"xǁCharucoPatternǁfor_display__mutmut_{n}": (frag, "equivalent: the squares are "
                                                     "made whole numbers (int) before use")
       for n, frag in ((34, "usable_w / sq"), (40, "usable_h / sq"))},
    "xǁCharucoPatternǁfor_display__mutmut_28": ("max(h // 8, 9)", "equivalent: a display "
                                                "under 72 px high is refused either way "
                                                "(squares under 12 px)"),
    "xǁCharucoPatternǁfor_display__mutmut_41": ("usable_h // sq, 4)", "equivalent: squares "
                                                "of 1/8 of the height fit 7 times in 92 % "
                                                "of it, never fewer than 4"),
    **{f"xǁCharucoPatternǁimage__mutmut_{n}": (frag, "equivalent: the board image is made "
                                               "at its exact size (no margin asked, and "
                                               "OpenCV's default margin is 0, border 1)")
       for n, frag in ((8, "marginSize=None"), (9, "borderBits=None"),
                       (11, "generateImage(size, borderBits"), (12, "marginSize=0, )"))},
    **{f"xǁCharucoPatternǁsave__mutmut_{n}": (frag, "formatting only: the JSON's "
                                              "indentation (the file is read back the same)")
       for n, frag in ((5, "indent=None"), (7, "to_dict(), )"), (8, "indent=3"))},
    # inscope/commands.py
    **{f"x__logging__mutmut_{n}": (frag, _LOG_SETUP) for n, frag in (
        (1, "basicConfig(level=None"), (2, "format=None)"), (3, "basicConfig(format="),
        (4, "logging.WARNING, )"), (5, ") and False"), (6, ") or True"),
        (7, 'getattr(None, "verbose"'), (9, 'INFO if getattr(args, "verbose", None)'),
        (13, 'INFO if getattr(args, "XXverboseXX"'),
        (14, 'INFO if getattr(args, "VERBOSE"'),
        (15, 'INFO if getattr(args, "verbose", True)'))},
    "x__logging__mutmut_21": ('if not getattr(args, "verbose", None)',
                              "equivalent: None is falsy, as False"),
    "x__logging__mutmut_27": ('if not getattr(args, "verbose", True)',
                              "a test to add: only bench's arguments have no verbose flag, "
                              "and bench runs in-process only with the Micro-Manager demo "
                              "configuration (minutes per mutant)"),
    "x_cmd_bench__mutmut_1": ("_logging(None)", "a test to add: an in-process bench (see "
                              "x__logging__mutmut_27)"),
    "x__serve__mutmut_60": ('"provider_note", None)', "equivalent: None is falsy, as ''"),
    **{f"x__serve__mutmut_{n}": (frag, "equivalent in tests: the progress line is drawn "
                                 "only on a terminal (sys.stdout.isatty()), and pytest "
                                 "captures stdout")
       for n, frag in ((70, "progress=None"), (73, "run_service(svc, summary_path"))},
    "x_cmd_run__mutmut_17": ("port_fallback=None", "equivalent: None is falsy, as False"),
    **{f"x_demo_config__mutmut_{n}": (frag, "equivalent while the config's defaults are "
                                      "the simulator and a gain of 1: with_overrides keeps "
                                      "the default for a value left out (the demo sets them "
                                      "so that a changed default cannot change the demo)")
       for n, frag in ((14, 'backend=None, options=opts'),
                       (18, 'with_overrides(base, "microscope", options=opts)'),
                       (29, "gain=None"), (34, "max_step_um=250.0, )"))},
    "x__register_bench__mutmut_111": ("what=None", _HELP_EXAMPLE),
    "x__register_bench__mutmut_114": ("add_exposure_argument(p, default=10.0, )",
                                      _HELP_EXAMPLE),
    "x__register_bench__mutmut_119": ("old_config_flag=None",
                                      "equivalent: None is falsy, as False"),
    "x__register_run__mutmut_50": ("old_config_flag=None",
                                   "equivalent: None is falsy, as False"),
    "x__register_run__mutmut_55": ("old_flag=None", "equivalent: None is falsy, as False"),
    **{f"x__register_run__mutmut_{n}": (frag, "equivalent: run then takes --exposure as a "
                                        "hidden alias of --exposure-ms, which argparse's "
                                        "abbreviations accept already")
       for n, frag in ((57, "add_exposure_argument(p, )"), (58, "old_flag=True"))},
    **{f"x__register_{cmd}__mutmut_{n}": (frag, _HELP_EXAMPLE)
       for cmd, n, frag in (("run", 60, "add_option_argument(p, None)"),
                            ("run", 62, "add_option_argument(p, )"),
                            ("bench", 77, "add_option_argument(p, None)"),
                            ("bench", 79, "add_option_argument(p, )"))},
    # acquisition/replay.py
    "x__natural_key__mutmut_4": (
        "t.upper()", "equivalent for names that differ in letters and numbers: upper and "
        "lower case order them alike (only [ \\ ] ^ _ ` sort apart)"),
    "x__ome_pixels__mutmut_15": (
        "(uri) or True", "equivalent: ElementTree reads '{}Pixels' (an empty namespace) as "
        "the plain tag"),
    "x__ome_pixels__mutmut_7": (
        "rpartition", "equivalent: a tag holds one '}'"),
    **{f"x__pixels_2d__mutmut_{n}": (frag, "equivalent: `initial` only matters for an "
                                     "empty frame, and frames have pixels")
       for n, frag in ((7, "min(initial=None)"), (8, "min(initial=1)"),
                       (11, "max(initial=None)"), (12, "max(initial=1)"))},
    **{f"x__parse_ome__mutmut_{n}": (frag, "equivalent: a plane without PositionX is "
                                     "skipped before its default is read")
       for n, frag in ((80, '"PositionX", None'), (82, '"PositionX", )'),
                       (86, '"PositionX", 1'))},
    "x__parse_ome__mutmut_105": (
        "sort(key=None)", "equivalent: the planes' index tuples differ, so sorting the "
        "pairs sorts by them"),
    **{f"x__parse_ome__mutmut_{n}": (frag, "equivalent: _read_tiff always gives the order "
                                     "(the default is for other callers)")
       for n, frag in ((1, 'order: str = "XXTZXX"'), (2, 'order: str = "tz"'))},
    **{f"x__read_ndtiff__mutmut_{n}": (frag, "equivalent: names and indices come from the "
                                       "same array's axes (one length)")
       for n, frag in ((99, "strict=None"), (102, "zip(names, idx, )"),
                       (103, "strict=False"))},
    **{f"x__read_ndtiff__mutmut_{n}": ('positions = ""', "equivalent: an empty string is "
                                       "falsy, and the stack takes `positions or None`")
       for n in (118, 127, 130)},
    "x__read_ndtiff__mutmut_122": (
        "require_xy=None", "equivalent: None is falsy like False"),
    "x__read_ndtiff__mutmut_24": (
        "redirect_stdout(None)", "equivalent: print() to a None stdout prints nothing, "
        "as to the StringIO"),
    "x__read_ndtiff__mutmut_32": (
        "(isinstance(ds.summary_metadata, dict)) or True", "equivalent for every dataset "
        "ndstorage opens: its summary metadata is a dict"),
    "x__read_ndtiff__mutmut_92": (
        "len(frames) < 100_000", "boundary: a dataset of exactly 100,000 frames"),
    **{f"x__read_sequence__mutmut_{n}": (frag, "equivalent for a single-page TIFF (the "
                                         "only kind whose pixel size is read): it has no "
                                         "channel axis")
       for n, frag in ((45, "_read_tiff(first, None)"), (48, "_read_tiff(first, 1)"))},
    "x__read_tiff__mutmut_12": (
        "(tf.is_ome) or True", "equivalent: tifffile gives no OME metadata (None) for a "
        "file that is not OME"),
    **{f"x_ndtiff_array__mutmut_{n}": (frag, "fork safety only (see ndtiff_array): the "
                                       "same pixels with dask's threaded scheduler; the "
                                       "hang it prevents shows only in a process forked "
                                       "after a read")
       for n, frag in ((11, "and False"), (12, "or True"), (13, "scheduler=None"),
                       (15, '"SYNCHRONOUS"'), (16, "compute is None"), (2, "compute = None"),
                       (3, "getattr(None"), (7, 'getattr(arr, "compute", )'),
                       (8, "XXcomputeXX"), (9, '"COMPUTE"'))},
    # inscope/outputs.py
    "xǁBoundedQueueǁ__init____mutmut_8": (
        "self._closed = None", "equivalent: None is falsy like False, and only its truth is "
        "read (`self._q or self._closed`)"),
    "xǁOutputǁ_fail__mutmut_15": (
        'getattr(e, "filename", )', "equivalent: every OSError has a filename attribute "
        "(None unless given), so the default is never used"),
    "xǁOutputǁ_run__mutmut_4": (
        "+                return", "equivalent: leaving the loop by return still runs the "
        "finally block that closes the output"),
    "xǁOutputǁstop__mutmut_1": (
        "timeout: float = 31.0", "a tuning constant: how long a stop waits for a stuck "
        "output (the wait itself is tested with a given timeout)"),
    **{f"xǁResultǁmessage__mutmut_{n}": (frag, _EQ_TRACK_IDS)
       for n, frag in ((5, "tracks=None"), (13, "self.detections, target_id="),
                       (10, "track_ids=None"), (18, '{"seq": self.seq}, )'))},
    # acquisition/microscope.py
    **{f"xǁMicroscopeǁ{fn}__mutmut_{n}": (frag, _EQ_PROTOCOL)
       for fn in ("move_xy", "move_z")
       for n, frag in ((1, "relative: bool = True"), (2, "wait: bool = False"))},
    # (BaseMicroscope)
    "xǁBaseMicroscopeǁ__init____mutmut_5": (
        "self._settled_ns = 1", "equivalent: the settle time starts far below any "
        "exposure's monotonic start (0 or 1 ns after boot)"),
    "xǁBaseMicroscopeǁmotion_during__mutmut_2": ("t < (end_ns", _EQ_CLOCK_TIE),
    "xǁBaseMicroscopeǁmotion_during__mutmut_4": ("self._settled_ns > start_ns",
                                                 _EQ_CLOCK_TIE),
    # acquisition/micromanager.py
    "xǁMicroManagerMicroscopeǁ__init____mutmut_73": (
        '== "DemoCamera") or True', "equivalent here: every camera of the test adapters is "
        "a DemoCamera (the demo-only settings are never offered to another camera)"),
    **{f"xǁMicroManagerMicroscopeǁ_busy_z__mutmut_{n}": (frag, "equivalent on the demo "
                                                         "adapters: their focus drive "
                                                         "(DStage) never reports busy")
       for n, frag in ((2, "return bool(None) and"), (3, "        None)"))},
    **{f"xǁMicroManagerMicroscopeǁ_frame_context__mutmut_{n}": (frag, "equivalent here: "
                                                                "every DemoCamera has a "
                                                                "Binning property")
       for n, frag in ((13, '"Binning")) or True'), (29, '"XX1XX"'))},
    "xǁMicroManagerMicroscopeǁ_call__mutmut_3": (
        "if (device) or True", "equivalent: every device call names its device (an "
        "empty name only reaches _library, which answers '' for it)"),
    "xǁMicroManagerMicroscopeǁheadless__mutmut_24": (
        'dry_run=dry_run, **kwargs)', "equivalent: 'headless' is also the default backend "
        "name of the constructor"),
    # acquisition/pymmcore_core.py
    "x_to_gray__mutmut_27": ("if (a.dtype != np.float32) or True", "equivalent: a "
                             "float32 array viewed as float32 is itself"),
    "x_to_gray__mutmut_36": ("else 5", "equivalent: the bytes per pixel only choose "
                             "16-bit channels when they are 8; 4 and 5 both mean 8-bit"),
    "x_to_gray__mutmut_44": ("reshape(None)", "equivalent: reshape(None) keeps the shape, "
                             "and a contiguous (H, W) uint32 array viewed as bytes holds "
                             "the same 4 x H x W values"),
    "x_to_gray__mutmut_47": ("reshape(-2)", "equivalent: numpy reads a negative size as "
                             "the one unknown dimension"),
    **{f"x_to_gray__mutmut_{n}": (frag, "equivalent: an (H, W) array passes the size "
                                  "check and its reshape to (H, W) changes nothing")
       for n, frag in ((62, "if a.ndim != 1 or"), (63, "if a.ndim == 2 or"))},
    **{f"xǁSnakeCaseCoreǁ__getattr____mutmut_{n}": (frag, "equivalent in behaviour: the "
                                                    "per-name cache only saves a lookup "
                                                    "(the class docstring's per-frame "
                                                    "cost); only timing tells")
       for n, frag in ((10, "fn = None"), (11, "methods.get(None)"),
                       (22, "methods[name] = None"))},
    **{f"xǁPixelFormatǁof__mutmut_{n}": (frag, "log only: the message or arguments of a "
                                         "debug line (logging formats it only when debug "
                                         "output is on); the None fallback is tested")
       for n, frag in ((7, "log.debug(None, e)"), (8, '%s", None)'), (9, "log.debug(e)"),
                       (10, '%s", )'))},
    **{name: ("GetSingleTag(None)", "killed in effect: pymmcore aborts the process "
              "(SIGABRT) on a null tag name, so every test that reads a tag dies; mutmut "
              "reads a signal as 'suspicious'")
       for name in ("xǁSnakeCaseCoreǁpop_next_tagged_image__mutmut_14",
                    "x_last_tagged_image__mutmut_14")},
    "xǁSnakeCaseCoreǁ__getattr____mutmut_9": (
        "raise AttributeError(None)", "wording only: the message of a name looked up on "
        "an adapter that was never initialised (e.g. while unpickling); still an "
        "AttributeError"),
    # control/focus.py
    "xǁFocusLockǁ_hold__mutmut_23": ("len(self._acc) >= 1", _EQ_ONE_SAMPLE),
    "xǁFocusLockǁ_balance__mutmut_27": (
        "abs(z - root) < self._d / 2", "boundary at exact equality of measured floats: "
        "equivalent in practice (a centre exactly half a dither from a computed root)"),
    "xǁFocusLockǁ_balance__mutmut_48": (
        "if slope <= 0:", "boundary at exact equality of measured floats: equivalent in "
        "practice (a fitted slope of exactly 0)"),
    "xǁFocusLockǁreset__mutmut_32": (
        "self._balanced = None", "equivalent: _balanced is read only after _balance has "
        "set it in the same cycle"),
    "xǁFocusLockǁreset__mutmut_33": (
        "self._balanced = 1", "equivalent: _balanced is read only after _balance has set "
        "it in the same cycle"),
    "xǁFocusLockǁ_cycle__mutmut_228": (
        "converged = None  # one more cycle", "equivalent: converged is only tested for "
        "truth, and None is as false as False"),
    "xǁFocusLockǁ_cycle__mutmut_17": ("len(self._acc) >= 1", _EQ_ONE_SAMPLE),
    "xǁFocusLockǁ_hold__mutmut_34": (
        "self._acc = None", "equivalent: while locked with a reference the list is not "
        "used; a scene change, a new cycle or a failed move sets it to [] first"),
    "xǁFocusLockǁ_hold__mutmut_85": (
        "self._low = None", "equivalent: a cycle starts, and the lock holds again only "
        "through convergence, which resets the count"),
    "xǁFocusLockǁ_hold__mutmut_86": (
        "self._low = 1", "equivalent: a cycle starts, and the lock holds again only "
        "through convergence, which resets the count"),
    "xǁFocusLockǁ_move__mutmut_18": (
        'return True, "XXXX", ""', "equivalent: a made move's status and reason are "
        "not used (the action reports the lock's state)"),
    "xǁFocusLockǁ_move__mutmut_19": (
        'return True, "", "XXXX"', "equivalent: a made move's status and reason are "
        "not used (the action reports the lock's state)"),
    "xǁFocusLockǁ_start_cycle__mutmut_15": (
        "self._check_xy = None", "equivalent: _check_xy is written, never read"),
    "xǁFocusLockǁ_start_cycle__mutmut_17": (
        "self._travel = 1.0", "equivalent: travel is read only while locked, and the lock "
        "holds again only through convergence, which resets it to 0"),
    "xǁFocusLockǁ_start_cycle__mutmut_13": (
        "get(STAMP_READY, 1)", "equivalent: a frame without an exposure stamp counts as "
        "exposed at 0 or 1 ns: either is seconds before any later frame"),
    "xǁFocusLockǁ_hold__mutmut_51": (
        "get(STAMP_READY, 1)", "equivalent: a frame without an exposure stamp counts as "
        "exposed at 0 or 1 ns: either is seconds before any later frame"),
    "xǁFocusLockǁ_cycle__mutmut_120": ('getattr(self, "_cycles", None)', _EQ_CYCLES),
    "xǁFocusLockǁ_cycle__mutmut_123": ('getattr(self, "_cycles", )', _EQ_CYCLES),
    "xǁFocusLockǁ_cycle__mutmut_126": ('getattr(self, "_cycles", 1)', _EQ_CYCLES),
    "xǁFocusLockǁ_cycle__mutmut_146": (
        "self._ref_xy = None", "equivalent: the next held frame sets it to its own "
        "position, which is where the converging frame was (the lock does not move XY)"),
    "xǁFocusLockǁ_cycle__mutmut_159": ('if self.state != "locked":', _EQ_REF),
    "xǁFocusLockǁ_cycle__mutmut_160": ('"XXlockedXX"', _EQ_REF),
    "xǁFocusLockǁ_cycle__mutmut_161": ('"LOCKED"', _EQ_REF),
    "xǁFocusLockǁ_step__mutmut_75": (
        "self._ref_xy = None", "equivalent: the same frame's hold or cycle sets it to this "
        "frame's position at once, the value it would have had"),
    "xǁFocusLockǁ_step__mutmut_82": (
        "self._phase >= 0 or", "a test to add: a scene change at the start of a cycle "
        "restarts it (and its cycle count) needlessly; seen only in max_cycles"),
    "xǁFocusLockǁ_cycle__mutmut_68": (
        ">= 2 * d", "boundary at exact equality of a fitted vertex and 2 d: equivalent "
        "in practice"),
    "xǁFocusLockǁ_cycle__mutmut_84": (
        "< d / 2", "boundary at exact equality of a fitted vertex and d / 2: equivalent "
        "in practice"),
    "xǁFocusLockǁ_cycle__mutmut_50": (
        "converged = None", "equivalent: None is as false as False in 'if converged'"),
    # control/steering.py
    "xǁSteererǁreset__mutmut_3": ('self._last_cmd = ""', _EQ_RESET),
    "xǁSteererǁreset__mutmut_4": ("self._settle_frames = None", _EQ_RESET),
    "xǁSteererǁreset__mutmut_5": ("self._settle_frames = 1", _EQ_RESET),
    "xǁSteererǁ_drop_refined__mutmut_1": (
        'self._refined_id = ""', "equivalent: '' like None never equals a track id, and "
        "the refiner is reset with it (not active), so 'is not None' is never reached"),
    "xǁSteererǁ_measure__mutmut_24": (
        "ref.active or self._refined_id", "equivalent: a refined id is set only by an "
        "acquire that activates the refiner, and both are reset together"),
    "xǁSteererǁ_measure__mutmut_19": (
        "self._refined_id = None", "a test to add: a target whose track is lost but which "
        "is still registered (the track-gone path needs the refined id)"),
    "xǁSteererǁ_measure__mutmut_28": ("pred = None", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_29": ("and False else", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_30": ("or True else", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_31": ("t is not None else", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_38": ("ref.locate(frame, None,", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_39": ("ref.locate(frame, pred, None)", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_42": ("ref.locate(frame, pred, )", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_43": ("and False else None", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_44": ("or True else None", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_45": ("seen_box or settled", _TODO_LOCATE),
    "xǁSteererǁ_measure__mutmut_61": (
        'return None, "XXXX"', "equivalent: with no position the action is not-seen and "
        "how it was seen is not reported"),
    "xǁSteererǁ_stale__mutmut_8": (
        "get(STAMP_READY, 1)", "equivalent: a frame without an exposure stamp counts as "
        "exposed at 0 or 1 ns, long before any move"),
    # detector/metrics.py
    **{f"x_{f}__mutmut_{k}": ('"STABLE"', "equivalent: numpy reads the sort kind in any "
       "case") for f, k in (("average_precision", 17), ("match", 37), ("pr_curve", 9))},
    **{f"x_{f}__mutmut_{k}": ('"NAN"', "equivalent: the same NaN")
       for f, k in (("average_precision", 5), ("evaluate", 131))},
    "x_average_precision__mutmut_41": (
        "rec, [2.0]", "equivalent: the last precision is 0, so a longer last step adds 0"),
    "x_average_precision__mutmut_44": (
        "[[1.0], prec", "equivalent: the first precision is never read (only mpre[i + 1])"),
    "x_average_precision__mutmut_56": (
        "mrec[:+1]", "equivalent: recall never falls, so the extra steps have zero width"),
    "x_evaluate__mutmut_128": (
        "img_ap = None", "equivalent: always set, 0.5 is always among the thresholds"),
    **{f"x_evaluate__mutmut_{k}": (frag, "equivalent: match computes the same IoU matrix "
       "itself") for k, frag in ((137, "gb, t, None)"), (142, "gb, t, )"),
                                 (183, "gb, t, None)"), (188, "gb, t, )"))},
    **{f"x_evaluate__mutmut_{k}": (frag, "equivalent: a prediction an ordinary box took "
       "is kept whatever its difficult overlap") for k, frag in (
           (149, "(assigned <= 0)"), (150, "(assigned < 1)"), (195, "(a_op <= 0)"),
           (196, "(a_op < 1)"))},
    **{f"x_evaluate__mutmut_{k}": (frag, "equivalent: the empty-list branch is reached only "
       "with no images, where no objects makes AP NaN before the array is read")
       for k, frag in ((254, "if pooled[t][1]"), (256, "np.zeros(0, None)"),
                       (258, "np.zeros(0, )"), (259, "np.zeros(1, bool)"),
                       (267, "np.zeros(1)"), (282, "if pooled[0.5][1]"),
                       (284, "np.zeros(0, None)"), (286, "np.zeros(0, )"),
                       (287, "np.zeros(1, bool)"))},
    **{f"x_evaluate__mutmut_{k}": (frag, "equivalent: every count goes through int()")
       for k, frag in ((38, "np.zeros(4, None)"), (40, "np.zeros(4, )"))},
    **{f"x_evaluate__mutmut_{k}": (frag, "equivalent: the lengths are checked equal just "
       "above") for k, frag in ((45, "strict=None"), (48, "gts, )"), (49, "strict=False"))},
    **{f"x_{f}__mutmut_{k}": ("reshape(-2", "equivalent: numpy reads any negative size as "
       "the unknown one") for f, k in (("evaluate", 60), ("evaluate", 69), ("evaluate", 80),
                                      ("evaluate", 96), ("iou_matrix", 11),
                                      ("iou_matrix", 23), ("touches_border", 12))},
    "x_iou_matrix__mutmut_100": (
        "np.where(union >= 0", "equivalent: where the union is not positive the "
        "intersection is 0, so the IoU is 0 either way"),
    "x_iou_matrix__mutmut_111": (
        "union, 2)", "equivalent: that divisor is used only where the union is not positive, "
        "where the outer where returns 0"),
    "x_iou_matrix__mutmut_25": (
        "len(a) == 0 and len(b) == 0", "equivalent: with one side empty the computation "
        "gives the same empty float64 matrix"),
    **{f"x_match__mutmut_{k}": (frag, "equivalent: a truth mask, only ever set to 1")
       for k, frag in ((27, "np.zeros(len(gt), None)"), (29, "np.zeros(len(gt), )"))},
    "x_match__mutmut_46": (
        "-2.0, m[i]", "equivalent: differs only for an IoU threshold at or below -1"),
    **{f"x_match__mutmut_{k}": (frag, "equivalent: numpy's default integer is int64")
       for k, frag in ((6, "np.full(n, -1, None)"), (9, "np.full(n, -1, )"))},
    # detector/preprocess.py
    **{f"x__affine__mutmut_{k}": (frag, "equivalent in values: only whether OpenCV writes "
       "into out in place or through a copy (speed)") for k, frag in (
           (5, "rows = None"), (19, "dst=None, dtype"), (26, "+                            "
                                                         "dtype=cv2.CV_32F)"),
           (31, "(rows) and False"), (11, "out.strides[0] >= 0"),
           (12, "out.strides[0] > 1"))},
    "x__affine__mutmut_17": ("img, None, float(b)", "equivalent: OpenCV reads None as 0"),
    **{f"x__affine__mutmut_{k}": (frag, "equivalent: the product of pixels and a float32 "
       "scale is written to float32 either way (differs only above 2**24)")
       for k, frag in ((46, "out=out, casting"), (47, 'dtype=np.float32, )'))},
    "x_as_image__mutmut_31": (
        "pixels.size == 1", "equivalent: a 2-D array of size 0 or 1 already has a side < 2"),
    "x_as_image__mutmut_41": ('"XXbiuXX"', "equivalent: no numpy dtype kind is 'X'"),
    **{f"x_as_image__mutmut_{k}": (frag, "equivalent: np.where already returns a new "
       "array of that dtype (only memory)") for k, frag in (
           (66, "copy=None"), (68, "pixels.dtype, )"), (76, "copy=True"))},
    **{f"x_normalise__mutmut_{k}": (frag, "equivalent: the defaults always give a method")
       for k, frag in ((5, '"method", None'), (7, '"method", )'),
                       (10, "XXpercentileXX"), (11, '"PERCENTILE"'))},
    "x_normalise__mutmut_88": (
        "np.copyto(out, img, )", "equivalent: as_image passes only real pixel types, "
        "which the default casting writes into float32 too"),
    **{f"x_pad_to_multiple__mutmut_{k}": (frag, "equivalent: OpenCV reads None as 0 "
       "(BORDER_CONSTANT is 0)") for k, frag in (
           (22, "img, None, ph"), (24, "ph, None, pw"), (26, "pw, None, value"))},
    # the noise sigma handed on by normalise (measured once) or measured again: the same
    # value from the same frame, only its cost differs
    **{f"x_{f}__mutmut_{k}": (frag, "equivalent in result: the camera-noise sigma is "
       "measured again instead of handed on (the same value; only its cost)")
       for f, k, frag in (("normalise", 30, "spec.get(None)"),
                          ("normalise", 31, 'spec.get("XXsparse_sigmaXX")'),
                          ("normalise", 32, 'spec.get("SPARSE_SIGMA")'),
                          ("normalise", 38, "noise=None)"),
                          ("normalise", 41, "img, spec, )"),
                          ("normalise", 68, "noise=None)"), ("normalise", 73, ")"),
                          ("hot_pixel_step", 10, "noise=None)"),
                          ("hot_pixel_step", 14, "pairs\")), )"),
                          ("sparse_high", 3, "(noise is None) or True"),
                          ("without_hot_pixels", 6, "(noise is None) or True"))},
    **{f"x_unscale_boxes__mutmut_{k}": (frag, "equivalent: at a factor within 1e-3 of 1 "
       "the sizes round to the image's own, the ratio is exactly 1 and the boxes stay")
       for k, frag in ((1, "1e-3 and not"), (3, "factor + 1.0"), (5, "<= 1e-3"))},
    "x_unscale_boxes__mutmut_9": ("shape[:3]", "equivalent: the shape given is (h, w)"),
    "x_resize__mutmut_26": (
        "factor <= 1", "equivalent: a factor of 1 has returned before (no-op)"),
    "x_resize__mutmut_4": (
        "<= 1e-3", "equivalent: no float factor lies exactly 1e-3 from 1"),
    # inscope/zmq_api.py
    **{f"xǁCommandServerǁ_reply_bytes__mutmut_{k}": (frag, "equivalent: set from the "
       "reply before anything that can raise") for k, frag in (
           (1, "counted = None"), (2, "counted = True"))},
    "xǁCommandServerǁ_rebind__mutmut_5": (
        "time.monotonic() > deadline", "boundary at exact equality of two clock readings: "
        "equivalent in practice"),
    "xǁCommandServerǁ_send__mutmut_17": (
        "poller.register(zmq.POLLIN)", "a test to add: after a reset, polling file "
        "descriptor 1 instead of the socket still serves, by spinning on the CPU (a test "
        "would read the server thread's CPU time)"),
    "xǁCommandServerǁ_send__mutmut_18": (
        "poller.register(self._sock, )", "a test to add: after a reset the ROUTER is also "
        "polled for writing, which it always is: it still serves, by spinning on the CPU"),
    "xǁCommandServerǁ_serve__mutmut_14": (
        "(self._pending) or True", "idle CPU only: the server looks every 5 ms instead of "
        "every poll_ms; every reply is the same and as early"),
    "xǁCommandServerǁ_serve__mutmut_15": (
        "6 if self._pending", "equivalent in practice: 6 ms instead of 5 between looks "
        "for a slow command's reply"),
    "xǁCommandServerǁ_serve__mutmut_21": (
        "self._send(None, envelope", "a test to add: shows only when a slow command's "
        "reply fails to send (the socket reset then has no poller to register with)"),
    **{f"xǁCommandServerǁ{f}__mutmut_{k}": ('rstrip(b"XX\\0XX")', "equivalent: a JSON "
       "request never ends in an X, so only its NULs are stripped either way")
       for f, k in (("_is_slow", 12), ("reply_for", 9))},
    "xǁCommandServerǁ_is_slow__mutmut_15": (
        "isinstance(req, dict)) or True", "equivalent: .get on a list, string or number "
        "raises, and the look then answers False"),
    "xǁCommandServerǁ__init____mutmut_25": (
        'threading.Thread | None = ""', "equivalent: start() sets it before anything "
        "reads it"),
    "xǁCommandServerǁstop__mutmut_1": (
        "timeout: float = 3.0", "a test to add: shows only with a handler stuck for over "
        "2 s, a test of at least 2 s"),
    **{f"xǁPubOutputǁhandle__mutmut_{k}": (frag, "equivalent: the subscriber receives the "
       "same bytes; zero-copy only saves time") for k, frag in (
           (30, "copy=None"), (33, "flags=zmq.NOBLOCK, )"), (35, "copy=True"))},
    "xǁPubOutputǁopen__mutmut_10": (
        "XPUB_NODROP, 2", "equivalent: libzmq reads any non-zero value as on"),
    # inscope/control_stage.py
    **{f"x_truth_centering_error_um__mutmut_{k}": (frag, "equivalent: float32 truth and "
       "boxes only pick the nearest cell; the precision of the result is float32 either "
       "way") for k, frag in ((15, "frame.truth, None)"), (17, "frame.truth, )"),
                              (40, "target_box, None)"), (42, "target_box, )"))},
    "x_truth_centering_error_um__mutmut_19": (
        "reshape(-2, 4)", "equivalent: numpy reads any negative size as the unknown one"),
    **{f"xǁCommandedMovesǁ{f}__mutmut_2": ("wait: bool = True", "equivalent: the "
       "parameter is never used; wait=False is always passed on") for f in ("move_xy",
                                                                            "move_z")},
    **{f"xǁCommandedMovesǁ{f}__mutmut_{k}": ("wait=None", "equivalent: the microscope "
       "tests 'if wait:', and None is falsy") for f, k in (("move_xy", 6), ("move_z", 5))},
    **{f"xǁControlStageǁ__init____mutmut_{k}": (frag, "equivalent: the steerer's default "
       "policy is nearest, and select() sets the configured one next") for k, frag in (
           (16, "Steerer(self.moves, tracker=self.tracker"), (23, "\"NEAREST\""))},
    "xǁControlStageǁstep__mutmut_125": (
        "step(frame, None, live)", "equivalent: the steerer reads detections only when "
        "it is given no tracks"),
    "xǁControlStageǁusable__mutmut_3": (
        'getattr(frame, "moving", None)', "equivalent: None and False are both falsy"),
    # control/tracking.py
    **{f"xǁTrackerǁ{f}__mutmut_{k}": ("reshape(-2, 2)", "equivalent: numpy reads any "
       "negative size as the unknown one") for f, k in (("_velocities", 14),
                                                          ("_velocities", 26), ("update", 43))},
    **{f"xǁTrackerǁupdate__mutmut_{k}": (frag, "equivalent: the empty-frame arrays are "
       "read only when the frame has detections") for k, frag in (
           (21, "centers_um = None"), (23, "centers_um = np.zeros((1, 2))"),
           (24, "centers_um = np.zeros((0, 3))"), (25, "sizes_um = None"),
           (27, "sizes_um = np.zeros((1, 2))"), (28, "sizes_um = np.zeros((0, 3))"))},
    "xǁTrackerǁupdate__mutmut_31": (
        "if (n) or True", "equivalent: names() of no detections is []"),
    "xǁTrackerǁupdate__mutmut_40": (
        "if (self.velocity) or True", "equivalent: a track's velocity stays zero unless "
        "the tracker estimates velocities (it is only set when velocity is on)"),
    "xǁTrackerǁupdate__mutmut_47": (
        "len(self._tracks) or n", "equivalent: with no tracks or no detections the "
        "assignment of an empty cost matrix matches nothing (only wasted work)"),
    "xǁTrackerǁupdate__mutmut_64": (
        "big = 1000000001.0", "equivalent: differs only for distances of a kilometre"),
    **{f"xǁTrackerǁupdate__mutmut_{k}": (frag, "equivalent: both come from the same "
       "assignment, always of equal length") for k, frag in (
           (91, "strict=None"), (94, "cols.tolist(), )"), (95, "strict=False"))},
    # control/focus_surface.py
    "xǁFocusSurfaceǁ_axes__mutmut_6": (
        "full_matrices=None", "equivalent: None is falsy, the same thin SVD"),
    "xǁFocusSurfaceǁ_axes__mutmut_13": (
        ") > self.min_spread_um", "boundary at exact equality of a computed spread: "
        "equivalent in practice"),
    "xǁFocusSurfaceǁ_fit__mutmut_16": (
        "zc = z + z.mean()", "equivalent: the left singular vectors of centred x, y are "
        "orthogonal to a constant, so adding one to z does not change the slope"),
    "xǁFocusSurfaceǁ_fit__mutmut_34": (
        "float)) + c) @ axes", "equivalent: points and queries move by the same 2c, and "
        "the spline (and the extent it is scaled by) does not depend on the origin"),
    "xǁFocusSurfaceǁ_fit__mutmut_58": (
        "degree=None)", "equivalent: SciPy's default degree for a thin-plate spline is 1"),
    "xǁFocusSurfaceǁ_fit__mutmut_63": (
        "smoothing=self.smoothing, )", "equivalent: SciPy's default degree for a thin-plate "
        "spline is 1"),
    "xǁFocusSurfaceǁ_fit__mutmut_61": (
        "+                          smoothing=self.smoothing, degree=1)",
        "equivalent: SciPy's default RBF kernel is the thin-plate spline"),
    "xǁFocusSurfaceǁ_fit__mutmut_69": (
        '"THIN_PLATE_SPLINE"', "equivalent: SciPy reads kernel names in any case"),
    "xǁFocusSurfaceǁ_fit__mutmut_103": (
        ".min(None)", "equivalent: predict asks for one point at a time, whose nearest "
        "distance is the least of all"),
    # acquisition/safety.py
    "xǁSoftLimitsǁfrom_dict__mutmut_15": (
        '"XXxyzXX"', "equivalent: 'x', 'y' and 'z' are substrings of 'XXxyzXX' too, and "
        "no other allowed key is"),
    # inscope/schema.py
    "x_dumps__mutmut_4": ("allow_nan=None", _EQ_FALSY),
    "x_dumps__mutmut_14": ("allow_nan=None", _EQ_FALSY),
    "x_dumps__mutmut_17": ('separators=(",", ":"), )', _EQ_NO_NAN),
    "x_dumps__mutmut_26": ("allow_nan=True", _EQ_NO_NAN),
    "x_detections_message__mutmut_51": (
        "astype(None)", "equivalent: astype(None) converts to float64, as the original"),
    "x_match_track_ids__mutmut_10": (".reshape(None)", _EQ_TRACK_BOX),
    "x_match_track_ids__mutmut_12": ("dtype=None", _EQ_TRACK_BOX),
    "x_match_track_ids__mutmut_14": ("np.asarray(t.box, )", _EQ_TRACK_BOX),
    "x_match_track_ids__mutmut_34": (
        "dtype=None", "equivalent: box centres are divided by 2 in float64 either way"),
    "x_match_track_ids__mutmut_36": (
        "np.asarray(boxes, )", "equivalent: box centres are divided by 2 in float64 "
        "either way"),
    # inscope/predict.py
    **{f"x_exposure_mid_ns__mutmut_{n}": ('"exposure_ms", ', "equivalent: a missing "
                                          "exposure reads as None or 0.0, and 'or 0.0' "
                                          "makes both 0.0") for n in (8, 10)},
    **{f"xǁBoxPredictorǁ_remember__mutmut_{n}": ("strict=", _EQ_STRICT_IDS) for n in (3, 6, 7)},
    "xǁBoxPredictorǁ_remember__mutmut_29": ("<= t_s - self.window_s", _BOUNDARY_TIME),
    "xǁBoxPredictorǁ_remember__mutmut_34": ("<= t_s - self.window_s", _BOUNDARY_TIME),
    "xǁBoxPredictorǁpredict__mutmut_23": (
        "and not r.tracks", "equivalent: boxes without tracks have no track ids and get "
        "no shift, and no boxes give empty arrays, either way"),
    "xǁBoxPredictorǁpredict__mutmut_75": (
        "and False", "equivalent: velocity_um_s(None) finds no history and returns None"),
    "xǁBoxPredictorǁpredict__mutmut_93": (
        "< self.max_shift_boxes", "boundary at exact equality of a fitted velocity times "
        "the horizon and the box size (floats)"),
    "xǁBoxPredictorǁvelocity_um_s__mutmut_13": (
        "np.ptp(t) < 0", "equivalent: _remember keeps strictly increasing times, so "
        "two or more points never have ptp(t) == 0"),
    "xǁBoxPredictorǁ__init____mutmut_2": ("window_s: float = 1.3", _DEFAULT_TUNING),
    "xǁBoxPredictorǁ__init____mutmut_3": ("min_points: int = 5", _DEFAULT_TUNING),
    # detector/decode.py: the centre vote (rewritten 2026-12-06; checked against a vote
    # written plainly in tests/detector/test_det_vote_calibration.py)
    **{f"x__centre_vote__mutmut_{n}": (frag, why) for why, pairs in (
        ("equivalent: decode_centernet always passes stride, agreement, radius and sigma",
         ((1, "stride: float = 5.0"), (2, "agree_cells: float = 1.75"),
          (3, "radius: int = 2"), (4, "sigma: float = 1.0"))),
        ("equivalent: the window is symmetric, so adding or subtracting the offsets visits "
         "the same cells with the peak in the middle",
         ((33, "y32[:, None] - dy"), (34, "x32[:, None] - dx"))),
        ("equivalent: cells clipped only above, or read through a reshape numpy accepts, "
         "are the cells of the border branch, whose weights it zeroes",
         ((37, "np.clip(ny, None"), (46, "np.clip(nx, None"), (63, "reshape(None)"),
          (112, "off.shape[0], -2"), (220, "size.shape[0], -2"))),
        ("equivalent: a weighted mean does not change when every weight is doubled",
         ((77, "2.0 / (1.0 + np.exp"),)),
        ("equivalent: peaks one cell further in take the border branch, which changes "
         "nothing where every cell is inside; heat[None] masks every peak the same way",
         ((86, "y32 <= radius"), (89, "x32 <= radius"), (92, "b = None"))),
        ("equivalent: the same dtype, copy or output array either way (einsum subscripts "
         "in upper case, astype, exp's out)",
         ((13, "radius + 1, )"), (58, "astype(None, copy=False)"), (59, "copy=None"),
          (61, "astype(np.float32, )"), (74, "copy=True"), (153, 'einsum("IJ->I"'),
          (162, 'einsum("IJ,IJ->I", wg, rx)'), (171, 'einsum("IJ,IJ->I", wg, ry)'),
          (198, "out=None"), (200, "np.exp(e, )"),
          (230, '"IJ,IJ->I", wgt, np.maximum(sz[0]'),
          (247, '"IJ,IJ->I", wgt, np.maximum(sz[1]'))),
        ("equivalent: one class is the multi-class index with c = 0",
         ((66, "(C == 1) and False"),)),
        ("boundary at exact equality of two centre estimates' distance with the agreement "
         "radius (floats)",
         ((143, "own_x) < agree_cells"), (146, "own_y) < agree_cells"))))
       for n, frag in pairs},
    # detector/scale.py
    **{f"x__measure__mutmut_{n}": (frag, why) for n, frag, why in (
        (71, "threshold(u8, None", _EQ_OTSU), (78, "threshold(u8, 1,", _EQ_OTSU),
        (79, "0, 256,", "equivalent: the mask is only read as zero / non-zero"),
        (94, "mask[::4, ::4] > 1", "equivalent: the mask is 0 or 255"),
        (11, "interpolation=", _EQ_CV_DEFAULT), (14, "interpolation=", _EQ_CV_DEFAULT),
        (8, "or True", _EQ_SAME_SIZE), (27, "f >= 1", _EQ_SAME_SIZE),
        (4, "img.astype(None)", "equivalent: float64 instead of float32, which OpenCV "
                                "takes alike"),
        (19, "max(2,", _TINY_SIDE), (25, "max(2,", _TINY_SIDE),
        *((n, "normalise(small", _INSENSITIVE_STRETCH)
          for n in (36, 37, 40, 41, 42, 43, 44, 46, 47, 48, 52, 53)),
        (60, "GaussianBlur(x, None", _INSENSITIVE_STRETCH),
        (68, "alpha=256.0", _INSENSITIVE_STRETCH),
        *((n, frag, _EMPTY_SAMPLE) for n, frag in (
            (97, "bg.size == 0 and"), (99, "bg.size == 1"), (101, "contrast = None"),
            (102, "contrast = 1.0"))),
        (52, "hot_pixel_sigma", _EQ_NO_HOT), (53, "HOT_PIXEL_SIGMA", _EQ_NO_HOT),
        (141, "_outline_px(u8, float(otsu), None)", _CUT_MINORITY))},
    **{f"x__object_areas__mutmut_{n}": (frag, why) for n, frag, why in (
        (3, "connectivity=", _EQ_CV_DEFAULT), (5, "connectivity=", _EQ_CV_DEFAULT),
        (15, "astype(None)", "equivalent: integer areas give the same median diameter"))},
    **{f"x__inside__mutmut_{n}": (frag, why) for n, frag, why in (
        (10, "x0 > 1", _EDGE_BOUNDARY), (12, "y0 > 1", _EDGE_BOUNDARY),
        (16, "y1 < shape[1]", "equivalent on a square crop (the crop is CROP_SIDE square "
                              "unless the frame is smaller)"))},
    **{f"x__outline_px__mutmut_{n}": (frag, why) for n, frag, why in (
        (2, "u8 < otsu", _INSENSITIVE_OUTLINE), (4, "and False", _INSENSITIVE_OUTLINE),
        (5, "or True", _INSENSITIVE_OUTLINE), (8, "else 1.0", _INSENSITIVE_OUTLINE),
        (11, "u8 >= bg", _INSENSITIVE_OUTLINE),
        (17, "_object_areas(low, None)", _CUT_MINORITY),
        (21, "or True", "insensitive: fewer than three outlines means the objects merged "
                        "at the outline level, and the one or two left are larger than "
                        "them: the outline test fails as it does on NaN"),
        (23, "len(area) > 3", "boundary: exactly three outlines"),
        (24, "len(area) >= 4", "boundary: exactly three outlines"))},
    **{f"x_measure_objects__mutmut_{n}": (frag, why) for n, frag, why in (
        (30, "f >= 1", "equivalent: a frame measured whole at full resolution is measured "
                       "again at full resolution on its middle (or all of it), less the "
                       "objects its edge cuts"),
        (34, "<= RESOLVED_PX", "boundary at float equality"),
        (36, "<= MIN_CONTRAST", "boundary at float equality"),
        (66, "fine.count > CROP_MIN_OBJECTS", "boundary: a middle with exactly 10 whole "
                                              "objects"),
        *((n, "whole_only", "insensitive through measure_objects: the crop's cut objects "
                            "are a minority and the median holds (drawn discs of 20-45 px: "
                            "the same size within 1 px); _measure's own test pins the rule")
          for n in (56, 59, 63)))},
    "x_estimate_object_size_px__mutmut_5": ("measure_objects(img, )", "equivalent unless a "
                                            "caller passes max_side; none does"),
    **{f"x__scale_for__mutmut_{n}": (frag, why) for n, frag, why in (
        (14, "dtype=None", "equivalent: an integer range gives the same centre"),
        (16, "np.asarray(card_range, )", "equivalent: an integer range gives the same "
                                         "centre"),
        (44, "<= target", "equivalent: at equality the factor is 1, under MIN_ENLARGE, "
                          "so no enlargement either way"))},
    "xǁServiceǁclose__mutmut_7": ("why=None", "equivalent: None and an empty reason "
                                  "both add nothing to the logged line"),
    "x_auto_scale_factor__mutmut_48": ("was >= 1", "equivalent: with was == 1 the kept "
                                       "factor is 1.0, what an untrusted estimate gives "
                                       "anyway"),
    "x_auto_scale_factor__mutmut_62": ("< HYSTERESIS", "equivalent but at exactly 10 % "
                                       "apart, which a quotient of two float factors does "
                                       "not land on"),
    # inscope/stats.py
    "xǁStampStatsǁadd__mutmut_19": ("tot = 1", "1 ns more in a combo: below the 0.1 µs "
                                    "the latency figures are rounded to"),
    "xǁQuantileSketchǁsummary__mutmut_16": ("and False", "equivalent: quantile() returns "
                                            "None only for an empty sketch, handled above"),
    "xǁQuantileSketchǁadd__mutmut_12": ("v >= self.max", "equivalent: a value equal to the "
                                        "max leaves the max as it is"),
    "xǁQuantileSketchǁadd__mutmut_14": ("v <= self.min", "equivalent: a value equal to the "
                                        "min leaves the min as it is"),
    "xǁStampStatsǁ__init____mutmut_15": ('= ""', "equivalent: fps returns 0 before two "
                                         "frames, and the first frame sets last_ready"),
    # inscope/overlay.py
    **{f"x_status_line__mutmut_{n}": (frag, "equivalent: the default for a state without "
                                      "its own words, 'focus <state>', is the same text")
       for n, frag in ((95, "XXlockedXX"), (96, "LOCKED"), (115, "XXsettlingXX"),
                       (116, "SETTLING"), (119, "XXlostXX"), (120, "LOST"))},
    **{f"x_status_line__mutmut_{n}": ('tour.get("phase"', "equivalent: a tour without a "
                                      "line or phase adds an empty part, and empty parts "
                                      "are left out of the line")
       for n in (14, 16)},
    **{f"x_display_available__mutmut_{n}": ("", _NEEDS_DISPLAY) for n in range(1, 21)},
    **{f"x_to_display__mutmut_{n}": (frag, "equivalent: a NaN or -inf pixel that "
                                      "nan_to_num leaves anywhere below the low percentile "
                                      "is made black by the next line, and +inf saturates "
                                      "white either way")
       for n, frag in ((41, "posinf=None"), (42, "neginf=None"), (44, "(pixels, posinf"),
                       (45, "nan=lo, neginf"), (46, "neginf=lo"))},
    "x_to_display__mutmut_19": ('"f" or not', "equivalent: for finite pixels the branch "
                                "computes the same percentiles and nan_to_num changes nothing"),
    **{f"xǁOverlayOutputǁsubmit__mutmut_{n}": ('"ready", ', "equivalent: every Frame has a "
                                               "ready stamp (set when it is built)")
       for n in (3, 5, 8)},
    # detector/tiling.py
    **{f"x__owned__mutmut_{n}": ("strict=", _EQ_STRICT) for n in (5, 8, 12, 26, 29, 33)},
    **{f"x_tile_grid__mutmut_{n}": ("strict=", _EQ_STRICT) for n in (77, 80, 81, 84, 87, 88)},
    "x__starts__mutmut_1": ("align: int = 2", "equivalent: tile_grid, the only caller, "
                            "always passes align"),
    "x_tile_grid__mutmut_4": ("if tile < 0 or", "equivalent: a tile of 0 is refused by "
                              "overlap >= tile anyway (overlap is >= 0 there)"),
    # detector/calibration.py (score_calibration)
    **{f"x_collect__mutmut_{n}": ("s.difficult is None", "equivalent: a Sample always "
                                  "carries a difficult array (zeros when none are given)")
       for n in (36, 38, 39, 40, 41)},
    "x_collect__mutmut_9": ('"calibration", )', "a test to add, or equivalent: a raw collect "
                            "on a card without calibration is tested, but pop's default is "
                            "only reached there"),
    **{f"x_best_f1_threshold__mutmut_{n}": (frag, "equivalent: F1 is >= 0 on every grid "
                                            "value, so the first one replaces the start "
                                            "value; thresholds above every score give 0")
       for n, frag in ((15, "1.951"), (20, "(1.5, -1.0)"), (22, "(0.5, -2.0)"))},
    "x_best_f1_threshold__mutmut_17": ("0.05), 3)", "equivalent: the grid's multiples of "
                                       "0.05 round alike to 2 or 3 decimals"),
    **{f"x_calibrate_model__mutmut_{n}": (frag, "equivalent here: the tests calibrate a copy "
                                          "of the shipped model on a CPU-only machine, what "
                                          "the default model and the automatic provider "
                                          "also give")
       for n, frag in ((11, "OnnxDetector(None"), (12, "provider=None"),
                       (13, "OnnxDetector(provider"), (14, "(model, )"), (16, '"CPU"'))},
    "x_calibrate_model__mutmut_1": ("frames: int = 17", "a default: a test of 16 frames "
                                    "would take most of a minute"),
    **{f"x_calibrate_model__mutmut_{n}": ("centre_shift_px", "a test to add: a card that "
                                          "holds a centre shift the new fit drops")
       for n in (138, 141, 142)},
    "x_expected_calibration_error__mutmut_15": ('"NAN"', "equivalent: float('NAN') is NaN"),
    **{f"x_fit_platt__mutmut_{n}": (frag, "equivalent: Newton's method converges to the "
                                    "same maximum from either start, and a ridge of 1e-6 "
                                    "(either sign) or a damped Hessian moves it by less "
                                    "than the fit's 1e-4 agreement with an independent fit")
       for n, frag in ((1, "iters: int = 101"), (32, "[2.0, 0.0]"), (33, "[1.0, 1.0]"),
                       (43, "- 1e-6 * w"), (48, "- 1e-6 * np.eye"),
                       (54, "1.000001 * np.eye"))},
    # control/workflow.py (workflow_core)
    **{f"x__extent__mutmut_{n}": (frag, "equivalent: a neighbour plane exactly at the "
                                  "threshold, inside or outside, puts the interpolated "
                                  "crossing on that plane either way")
       for n, frag in ((26, "v[lo - 1] > thr"), (45, "v[hi + 1] > thr"))},
    "x__extent__mutmut_61": ("float(None)", "equivalent: unreachable, a plane inside the "
                             "extent and the one outside it never hold equal signal"),
    **{f"x__field_um__mutmut_{n}": (frag, "equivalent for a rotation times a scaling of "
                                    "each axis (what a calibration measures): the angle "
                                    "of R D is that of R for any positive diagonal D")
       for n, frag in ((15, "[-2.0, 1.0]"), (16, "[-1.0, 2.0]"))},
    "x__field_um__mutmut_18": ("det(a) <= 0", "equivalent: a singular affine (det 0) maps "
                               "no field"),
    **{f"x_plan_fields__mutmut_{n}": (frag, "equivalent: a grown region is never narrower "
                                      "than a field minus a step (the overlap), so the "
                                      "formula gives 1 there as well")
       for n, frag in ((56, "and False"), (59, "span < field_um"))},
    **{f"x_plan_fields__mutmut_{n}": (frag, "wording only: the end of the message")
       for n, frag in ((79, "XXseveral).XX"), (80, "SEVERAL)."))},
    "x_signal_for__mutmut_5": ('"optical_sectioning", None', "equivalent: None and False "
                               "are both false"),
    **{f"xǁCellRecordǁrow__mutmut_{n}": ("strict=", "equivalent: a box is four numbers by "
                                        "construction (_box4)")
       for n in (19, 22, 31)},
    "xǁFindAndImageǁ_merge__mutmut_9": ("dup = None", "equivalent: None and False are "
                                        "both false"),
    # inscope/tour.py
    **{f"xǁTourǁstep__mutmut_{n}": ('"choosing", None', "equivalent: the time a phase began "
                                    "is read only in focusing, centring, holding and "
                                    "following, each entered with its time; choosing "
                                    "never reads it")
       for n in (36, 84, 185, 227)},
    **{f"xǁTourǁstep__mutmut_{n}": ('"locked", ', "equivalent: a ControlStage's focus is "
                                    "always a FocusLock, which has locked")
       for n in (10, 13, 16)},
    "xǁTourǁstep__mutmut_24": ('"limits", )', "equivalent: every microscope has limits "
                               "(None when unset)"),
    "xǁTourǁstep__mutmut_33": ("t + self._phase_t", "equivalent: focusing is only the "
                               "first phase, begun at time 0"),
    **{f"xǁTourǁstep__mutmut_{n}": ("_timeout_s", "boundary at exact equality of two "
                                    "clock readings in float seconds: 30 s and 3 s are not "
                                    "reachable exactly from nanoseconds x 1e-9")
       for n in (34, 82)},
    **{f"xǁTourǁ_choose__mutmut_{n}": (frag, "insensitive: the background (20th "
                                      "percentile of a 1/64 sample) and a nucleus' upper "
                                      "intensity (90th percentile of its box) move by "
                                      "less than the brightness differences that decide")
       for n, frag in ((12, "[::9, ::8]"), (13, "[::8, ::9]"), (14, "], 21)"),
                       (132, "(crop, 91)"))},
    "xǁTourǁ_choose__mutmut_140": ("t.area_px, 2.0", "equivalent for cells of 2 px² or "
                                   "more (a box of at least 4 x 4 px passes the crop guard)"),
    **{f"xǁTourǁ_choose__mutmut_{n}": (frag, "equivalent unless two cells score exactly "
                                       "the same: the tuples then compare by their score")
       for n, frag in ((143, "key=None"), (145, "max(cand, )"))},
    "xǁTourǁ_choose__mutmut_26": ("else 1.0", "equivalent: with no cell seen there is no "
                                  "candidate for the area to rule out"),
    "xǁTourǁ_now__mutmut_12": ("1000000001.0", "insensitive: a clock 1e-9 fast changes "
                               "no phase boundary by more than a nanosecond a second"),
    "xǁTourǁ_now__mutmut_20": ('"ready", 1)', "equivalent: a frame with neither clock "
                               "counts 1 - 1 = 0 instead of 0 - 0"),
    **{f"xǁTourǁ{fn}__mutmut_{n}": ("or True", "equivalent: a Frame's metadata is always a "
                                    "dict (empty: .get gives None)")
       for fn, n in (("_now", 3), ("record", 60))},
    **{f"xǁTourǁsummary__mutmut_{n}": ("strict=", "equivalent: three names zipped with "
                                       "two percentiles and the maximum, equal lengths "
                                       "by construction")
       for n in (84, 87, 100)},
    "xǁTourǁ_travel__mutmut_23": ("<= 1e-6", "boundary at exact equality of a measured "
                                  "distance: equivalent in practice"),
    "xǁTourǁ_travel__mutmut_41": ("range(9)", "equivalent: a ninth try turns by 4 x 45 "
                                  "degrees the other way, the direction of the eighth"),
    "xǁTourǁ_travel__mutmut_46": ("// 2 / (1", "equivalent: dividing by 1 or -1 is "
                                  "multiplying by it"),
    # acquisition/micromanager.py
    **{f"xǁMicroManagerMicroscopeǁ{fn}__mutmut_{n}": (frag, _MM_MARGIN)
       for fn, ns, frag in (("_produce", (36, 40, 118, 119, 120), "exposure_ns"),
                            ("_produce_attached", (24, 28, 77, 78, 79), "exposure_ns"))
       for n in ns},
    **{f"xǁMicroManagerMicroscopeǁ{fn}__mutmut_{n}": ("motion_during(ready", _MM_END_NOW)
       for fn, ns in (("_produce", (115, 116, 117)), ("_produce_attached", (74, 75, 76)))
       for n in ns},
    **{f"xǁMicroManagerMicroscopeǁ_produce__mutmut_{n}": ("count", _MM_COUNT)
       for n in (54, 55, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99)},
    "xǁMicroManagerMicroscopeǁ_produce__mutmut_83": (
        "or True", "equivalent: dict(None) raises the TypeError the next line catches, "
        "which gives the same empty tags"),
    "xǁMicroManagerMicroscopeǁ_produce__mutmut_86": ("tags = None", _MM_BRIDGE_TAGS),
    **{f"xǁMicroManagerMicroscopeǁconnect__mutmut_{n}": (frag, _MM_GUI)
       for frag, ns in (("dry_run: bool = True", (1,)), ("poll_s", range(12, 19)),
                        ("attach_running", range(19, 28)), ("scope = ", range(28, 40)),
                        ("scope.attach_running", (40,)))
       for n in ns},
    "xǁMicroManagerMicroscopeǁconnect__mutmut_2": ("2001", "equivalent: a millisecond "
                                                   "more to wait for the GUI's answer"),
    "xǁMicroManagerMicroscopeǁ_produce__mutmut_70": (
        "range(n - 2)", "latency only: when two images arrived between polls the older "
        "is handed out first and the newest on the next poll (0.5 ms later); a consumer "
        "that keeps up sees the same frames"),
    "xǁMicroManagerMicroscopeǁ_produce__mutmut_51": (
        "acquisition, 1.0)", "equivalent for these cameras: the interval is a minimum "
        "between images (ms), below any exposure used here"),
    **{f"xǁMicroManagerMicroscopeǁ{fn}__mutmut_{n}": ("stamps={STAMP_READY: ready}",
                                                     _MM_STAMP)
       for fn, n in (("_produce", 132), ("_produce_attached", 91), ("snap", 64))},
    **{f"xǁMicroManagerMicroscopeǁ{fn}__mutmut_{n}": ("self._streaming = None", _EQ_FALSY_FLAG)
       for fn, ns in (("_produce", (149,)), ("_produce_attached", (112,)),
                      ("reset", (2,)), ("close", (2,)), ("__init__", (99,)))
       for n in ns},
    **{f"xǁMicroManagerMicroscopeǁ_produce_attached__mutmut_{n}": ("index", _MM_BRIDGE_TAGS)
       for n in (57, 59, 64, 65)},
    "xǁMicroManagerMicroscopeǁ_produce_attached__mutmut_31": (
        'last = ""', "equivalent: an image number is an int or None (skipped before the "
        "comparison), never equal to an empty string either"),
    "xǁMicroManagerMicroscopeǁ_produce_attached__mutmut_48": (
        '"XX(attach_running=False).XX"', "wording only: the closing words of the error; "
        "the test checks the option it names"),
    **{f"xǁMicroManagerMicroscopeǁ{fn}__mutmut_{n}": ('self._pos_cache = ""', _MM_CACHE_RESET)
       for fn, ns in (("_set_xy", (9,)), ("_set_z", (9,)), ("_on_settled", (1,)),
                      ("__init__", (96,)))
       for n in ns},
    **{f"xǁMicroManagerMicroscopeǁ__init____mutmut_{n}": ("self._pos_t", _MM_POS_T)
       for n in (97, 98)},
    "xǁMicroManagerMicroscopeǁ_cached_position__mutmut_5": ("self.position_refresh_s",
                                                           _EQ_CLOCK_TIE),
    "xǁMicroManagerMicroscopeǁ__init____mutmut_2": (
        "position_refresh_s: float = 1.25", "a tuning constant (how soon a joystick move "
        "reaches the frames); the test sets its own refresh and checks the behaviour"),
    "xǁMicroManagerMicroscopeǁ__init____mutmut_30": (
        "bool(stages) or all(", "a camera-only configuration tells it apart "
        "(test_a_camera_only_config_gets_no_demo_limits, added after the last scoring "
        "run; checked by hand: it fails with this mutant)"),
    **{f"x__port_open__mutmut_{n}": ("timeout", _MM_LOCAL_PORT) for n in (1, 3, 5)},
    "x__sequence_running__mutmut_8": (
        "return True", "a test to add: needs a core whose is_sequence_running raises (a "
        "failing camera adapter); the demo adapters never do"),
    **{f"x_affine_from_mm__mutmut_{n}": ("len(vec)", "equivalent for Micro-Manager's "
                                         "affine, always 6 numbers: only a 5-number "
                                         "vector would tell") for n in (8, 9)},
    "x_affine_from_mm__mutmut_26": ("<= 1e-12", "boundary at exact equality of a "
                                    "determinant: equivalent in practice"),
    "xǁMicroManagerMicroscopeǁ_native_affine__mutmut_9": (
        'vec = ""', "equivalent: an empty string is as empty as None for affine_from_mm"),
    "xǁMicroManagerMicroscopeǁ_library__mutmut_11": (
        'return "XXXX"', "wording of an error message only: the library name printed "
        "when the core cannot give one"),
    **{f"xǁMicroManagerMicroscopeǁheadless__mutmut_{n}": ("headless_core(", _MM_ONE_CORE)
       for n in (3, 4, 6)},
    **{f"xǁMicroManagerMicroscopeǁ{fn}__mutmut_{n}": ('"attach_running", None', _EQ_POP_NONE)
       for fn, n in (("headless", 10), ("from_core", 19))},
    # acquisition/stream.py
    "x_pace__mutmut_5": ("wait < 0", _EQ_CLOCK_TIE),
    **{f"xǁFrameStreamǁ__init____mutmut_{n}": (frag, "wording only: the producer "
                                               "thread's name, as a debugger or py-spy "
                                               "shows it")
       for frag, ns in (('"frames"', (1, 2)), ("inscope-{name}", (11, 14))) for n in ns},
    **{f"xǁFrameStreamǁ__init____mutmut_{n}": ("daemon", "a test to add: whether the "
                                               "producer thread is a daemon matters only at "
                                               "interpreter exit while a producer is stuck "
                                               "in a device call (needs a subprocess)")
       for n in (12, 15, 16)},
    **{f"xǁFrameStreamǁ__iter____mutmut_{n}": ("timeout=None", _EQ_ITER_STOP)
       for n in (3, 5, 7)},
    "xǁFrameStreamǁ_emit_lossless__mutmut_6": (
        "timeout=1.1", "a tuning constant: how long a stopped lossless producer may wait "
        "in the hand-off; the close test bounds it at 2.5 s"),
    **{f"xǁFrameStreamǁ{fn}__mutmut_1": ("6.0", "a default time-out (s), not behaviour")
       for fn in ("close", "get")},
    "xǁFrameStreamǁ_emit_lossless__mutmut_8": (
        "return True", "equivalent: the answer of a hand-off abandoned because the stream "
        "is stopping; no producer reads it then (it stops)"),
    # acquisition/simulated/camera_process.py (the parent's side; the child's code is in
    # UNREACHABLE)
    **{f"xǁProcessCameraǁ__init____mutmut_{n}": (frag, "equivalent: read only after "
                                                 "start() has set it (or stop() finds no "
                                                 "process, resp. no state segment, first)")
       for n, frag in ((3, "self._conn: Connection | None = \"\""),
                       (5, "self._shm_frames: shared_memory.SharedMemory | None = \"\""))},
    **{f"xǁProcessCameraǁproduce__mutmut_{n}": (frag, "not reachable here: the check for a "
                                                "child that died without its pipe closing "
                                                "(another process holding its end); a "
                                                "killed child closes it, and the stream "
                                                "ends on EOF (tested)")
       for n, frag in ((16, "conn.poll(None)"), (17, "conn.poll(1.25)"), (19, "None)"))},
    "xǁProcessCameraǁproduce__mutmut_9": ("or proc is not None", "equivalent: start() "
                                          "sets both or raises"),
    **{f"xǁProcessCameraǁstart__mutmut_{n}": (frag, "equivalent: a larger shared-memory "
                                              "segment than needed (the views read their "
                                              "own size); float64 is numpy's default dtype")
       for n, frag in ((15, "motion.SIZE * 9"), (25, "np.dtype(None)"),
                       (28, "np.ndarray(motion.SIZE, None"),
                       (31, "np.ndarray(motion.SIZE, buffer"))},
    "xǁProcessCameraǁstart__mutmut_37": ("get_context(None)", "equivalent on Linux, whose "
                                         "default start method (fork) runs the camera too; "
                                         "spawn is chosen so it works on Windows and macOS "
                                         "and no threaded process is forked"),
    **{f"xǁProcessCameraǁstop__mutmut_{n}": (frag, "equivalent: the child stops on any "
                                             "message (it polls its pipe), so waiting for "
                                             "ever (join(None)) or 3 s ends the same way")
       for n, frag in ((1, "timeout: float = 3.0"), (6, "conn.send(None)"),
                       (7, 'conn.send("XXstopXX")'), (8, 'conn.send("STOP")'),
                       (9, "proc.join(None)"), (10, "proc.join(None)"))},
    "xǁProcessCameraǁstop__mutmut_18": ("break", "equivalent: the two segments are made "
                                        "and freed together, so neither is None alone"),
    # control/cli.py
    **{f"x_open_from_args__mutmut_{n}": (frag, "the mm backend: it opens a running "
                                         "Micro-Manager GUI through pycro-manager's Java "
                                         "bridge (--port), which no test can start here")
       for n, frag in ((38, "opts = None"), (39, '"XXportXX"'), (40, '"PORT"'),
                       (41, '"XXexposure_msXX"'), (42, '"EXPOSURE_MS"'))},
    **{f"x_{f}__mutmut_{n}": (frag, "equivalent for the parsed arguments: calibrate and "
                              "scan both define the attribute, so getattr without a "
                              "default never raises")
       for f, n, frag in (("limits_from_args", 6, 'getattr(args, "limits", )'),
                          ("open_from_args", 51, 'getattr(args, "option", )'))},
    # inscope/service.py
    "x__end_context__mutmut_5": ("linger=1", "equivalent in effect: one millisecond of "
                                 "linger is as good as none (the test's queued message is "
                                 "dropped either way)"),
    **{f"x_format_summary__mutmut_{n}": (frag, "equivalent: a 'centred' status not in the "
                                         "table falls through .get(status, status) to "
                                         "'centred' itself")
       for n, frag in ((167, '"XXcentredXX": "centred"'), (168, '"CENTRED": "centred"'))},
    "x_load_detector_for__mutmut_28": ('load_detector("CLASSICAL"', "equivalent: "
                                       "load_detector reads the name case-insensitively"),
    **{f"x_write_summary__mutmut_{n}": (frag, "equivalent: json.dumps escapes every "
                                        "non-ASCII character (ensure_ascii), so the text is "
                                        "the same bytes in any encoding")
       for n, frag in ((18, "encoding=None"), (20, 'path.open("w", )'),
                       (24, 'encoding="UTF-8"'), (38, "encoding=None"),
                       (40, "tmp.write_text(text, )"), (42, 'encoding="UTF-8"'))},
    **{f"x_write_summary__mutmut_{n}": (frag, "not killable as root: it needs a write "
                                        "that fails before the temporary file exists (a "
                                        "folder the process may not write to); no folder "
                                        "refuses root, and a full disk creates the file "
                                        "first. test_service_summary's locked-folder test "
                                        "kills it where the tests do not run as root")
       for n, frag in ((44, "missing_ok=None"), (45, "missing_ok=False"))},
}


_STRING = re.compile(r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")


def _sides(diff: str) -> tuple[list[str], list[str]]:
    """The removed and the added lines of a mutant's diff (as _diffs keeps it: changed
    lines only, no file headers), without their - / + marks."""
    lines = diff.splitlines()
    return ([ln[1:] for ln in lines if ln.startswith("-")],
            [ln[1:] for ln in lines if ln.startswith("+")])


def _wording_only(diff: str) -> bool:
    """True when a mutant only changes the text of a message (a string literal with a
    space in it), e.g. ``"Nothing moved"`` -> ``"XXNothing movedXX"``."""
    old, new = _sides(diff)
    if not old or len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        if _STRING.sub('""', a) != _STRING.sub('""', b):
            return False
        changed = [x for x, y in zip(_STRING.findall(a), _STRING.findall(b), strict=False)
                   if x != y]
        if not changed or not all(" " in x for x in changed):
            return False
    return True


#: one or more adjacent string literals (implicit concatenation, f-strings too)
_LITERALS = r"""(?:[rbfRBF]{0,2}(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*)+"""
#: keyword arguments of argparse calls that only document: what --help prints
_PARSER_DOC = re.compile(rf"\b(?:help|metavar|description)=(?:None|{_LITERALS}|\((?:{_LITERALS}|"
                         rf",\s*)+\))\s*,?\s*")
_GROUP_TITLE = re.compile(rf"add_argument_group\((?:None|{_LITERALS})\)")
#: on/off flags whose default without ``default=`` is False, not None
#: (argparse.BooleanOptionalAction's is None)
_SWITCH = re.compile(r"store_true|store_false")


#: reasons of survivors that change only text (see _score)
_TEXT_ONLY = ("wording only", "--help text only")


def _parser_norm(text: str) -> str:
    text = _PARSER_DOC.sub("", text)
    text = _GROUP_TITLE.sub("add_argument_group()", text)
    return re.sub(r"[\s,]+", "", text)


def _parser_reason(diff: str) -> str | None:
    """Why an argparse mutant cannot change what a command does, or None if it can: it
    only changes --help (help, metavar, description, a group title), or it leaves out
    ``default=None``, argparse's own default, on a flag that is not an on/off switch
    (a store_true flag's default is False without it: that one changes behaviour)."""
    old, new = (" ".join(side) for side in _sides(diff))
    if not re.search(r"\b(help|metavar|description)=|add_argument", old + new):
        return None
    o, n = _parser_norm(old), _parser_norm(new)
    if o == n:
        return ("--help text only: a help, metavar, description or group title of a flag; "
                "the tests check the flags' names, values and defaults, not their help "
                "wording")
    if o.replace("default=None", "") == n and not _SWITCH.search(old):
        return ("equivalent: default=None is argparse's default for a flag that takes a "
                "value")
    return None


# Survivor patterns recognised from the diff (checked in order): regex on the added
# line(s), reason. Honest labels: "equivalent" only where the change cannot alter
# behaviour for the inputs the code receives, else "a test to add".
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\b(Steer|Focus)Action\(None,",
     "a test to add: assert frame_index on every kind of action"),
    (r"np\.(asarray|array)\([^()]*, (None|)\)|dtype=None|astype\(None\)",
     "equivalent for the inputs given: they are already float64 (or the dtype does not "
     "change the result)"),
    (r"\b(ready|stale|en|d|mn|wait|step|disagreement|resp|len\(\w+\)|a|val) (<=|>=) ",
     "boundary at exact equality of measured floats: equivalent in practice (a test "
     "would need two computed floats exactly equal)"),
    (r"\.reshape\(-2\b", "equivalent: numpy reads any negative size as 'the rest', "
     "like -1"),
    (r"allow_pickle=None|np\.load\(path, \)",
     "equivalent: allow_pickle None or left out is False (numpy's default): object "
     "arrays are still refused"),
    (r"^\+\s*log\.(debug|info)\(",
     "log only: the message or arguments of a debug / info line (logging formats it only "
     "when that level is on), not behaviour"),
    (r"self\._call\((None, |[\w.]+, None,)",
     "wording only: the device or the action named in the error of one device call; the "
     "form of that error is tested on calls that fail on the demo adapters, and this one "
     "does not fail there"),
    (r"^\+\s*self\._\w+(: [^=]+)? = (None|\"\"|1|0)$",
     "a test to add, or equivalent: an internal reset value that is overwritten before "
     "it is read in every tested path"),
)


def _noted(name: str, diff: str) -> str | None:
    """The SURVIVOR_NOTES note for mutant *name*, if its fragment is in *diff*. mutmut
    numbers a function's mutants in order, so a change to the function renumbers them:
    a note whose number now names another mutant is then found by its fragment among
    the notes of the same function, when exactly one of them matches."""
    fragment, note = SURVIVOR_NOTES.get(name, ("\0", ""))
    if fragment in diff:
        return note
    func = name.rpartition("__mutmut_")[0]
    hits = {n for k, (f, n) in SURVIVOR_NOTES.items()
            if k.rpartition("__mutmut_")[0] == func and f in diff}
    return hits.pop() if len(hits) == 1 else None


def _reason(name: str, diff: str) -> str:
    note = _noted(name, diff)
    if note is not None:
        return note
    if _wording_only(diff):
        return ("wording only: changes the text of a message; the tests check each "
                "message's key phrases (value, limit, fix), not every word")
    parser = _parser_reason(diff)
    if parser is not None:
        return parser
    added = "\n".join(ln for ln in diff.splitlines() if ln.startswith("+"))
    for pattern, reason in _PATTERNS:
        if re.search(pattern, added, re.MULTILINE):
            return reason
    return "a test to add (not analysed one by one)"


def _installed_path(repo_path: str) -> str:
    top, _, rest = repo_path.partition("/")
    return f"{PACKAGE_DIRS[top]}/{rest}"


def _module_name(repo_path: str) -> str:
    return _installed_path(repo_path).removesuffix(".py").replace("/", ".")


def _ignore(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".pytest_cache", "mutants")
            or n.endswith(".pyc")}


def _stage(work: Path, t: Target) -> None:
    """Lay out the installed package under work/src, the tests and a mutmut config."""
    src = work / "src"
    for top, dest in PACKAGE_DIRS.items():
        shutil.copytree(ROOT / top, src / dest, ignore=_ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=_ignore)
    # (tests that build their data with a benchmark's generator import it, e.g. the
    # confocal-like stack of test_refine_centroid)
    shutil.copytree(ROOT / "benchmarks", work / "benchmarks",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "results"))
    _stage_config(work, t)


def _stage_config(work: Path, t: Target) -> None:
    """mutmut's and pytest's settings for *t* (the module to mutate, its test files)."""
    # (a test file, or one test of it as pytest names it: FILE::TEST)
    tests = [p for p in t.tests if (ROOT / p.split("::")[0]).exists()]
    if not tests:
        raise SystemExit(f"mutation: no test file of {t.name} exists: {t.tests}")
    q = json.dumps
    (work / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        'pythonpath = ["."]\n'
        'addopts = "-q -p no:cacheprovider"\n'
        "markers = [\n"
        '  "mm_gui: needs the Micro-Manager GUI",\n'
        '  "slow: slow",\n'
        "]\n"
        "[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        'also_copy = ["benchmarks"]\n'
        f"only_mutate = [{q('src/' + _installed_path(t.path))}]\n"
        f"pytest_add_cli_args_test_selection = {q(tests + _deselected(t))}\n"
        "use_git_change_detection = false\n"
        f"process_isolation = {q(t.isolation)}\n"
        # a mutant that hangs a loop is killed by the timeout, not waited for
        "timeout_multiplier = 5.0\n"
        "timeout_constant = 5.0\n")


def _deselected(t: Target) -> list[str]:
    """pytest arguments leaving out *t*'s deselected tests."""
    return [arg for test, _why in t.deselect for arg in ("--deselect", test)]


def _meta_path(work: Path, t: Target) -> Path:
    return work / "mutants" / "src" / (_installed_path(t.path) + ".meta")


def _meta(work: Path, t: Target) -> dict[str, int | None]:
    meta = _meta_path(work, t)
    if not meta.exists():
        return {}
    return json.loads(meta.read_text()).get("exit_code_by_key", {})


def merge_verdicts(kept: dict[str, int | None], rerun: dict[str, int | None],
                   patterns: Sequence[str]) -> dict[str, int | None]:
    """The verdicts after a partial re-run: *rerun*'s for the mutants matching
    *patterns*, *kept*'s for every other one that had one.

    ``mutmut run NAME...`` after the tests changed resets every verdict of the module and
    re-tests only the mutants named, so a ``--survivors`` re-run (after adding tests)
    came back with the kept run's killed mutants unchecked (a tour re-run, and the score
    calibration's: 293 of 534). Kept verdicts stand on the assumption the survivors
    workflow makes: tests were added, and a mutant a test killed stays killed. After
    removing or weakening tests, start afresh.
    """
    merged = dict(rerun)
    for key, code in kept.items():
        if code is not None and not any(fnmatch.fnmatch(key, p) for p in patterns):
            merged[key] = code
    return dict(sorted(merged.items()))


TIMEOUT_CODES = {36, 24, -24}  # mutmut's time-out, and SIGXCPU from its CPU-time limit
KILLED_CODES = {1, 3, 152, 255} | TIMEOUT_CODES  # test failure, pytest error, timeouts
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}


def _status(code: int | None) -> str:
    if code in KILLED_CODES:
        return "killed"
    if code in SURVIVED_CODES:
        return "survived"
    if code in NO_TESTS_CODES:
        return "no tests"
    if code is None:
        return "not checked"
    return f"suspicious (exit {code})"


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
job = json.loads(sys.stdin.read())
out = {}
for name in job["names"]:
    lines = get_diff_for_mutant(name, path=job["path"]).splitlines()
    keep = [ln for ln in lines if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    out[name] = "\\n".join(keep)
print(json.dumps(out))
"""


def _diffs(work: Path, env: dict[str, str], path: str, names: list[str]) -> dict[str, str]:
    """The changed lines (- old / + new) of each mutant of *path*, from one process."""
    if not names:
        return {}
    r = subprocess.run([sys.executable, "-c", _DIFFS], cwd=work, env=env, text=True,
                       input=json.dumps({"path": path, "names": names}),
                       capture_output=True, timeout=600)
    if r.returncode != 0:
        return {n: f"(diff unavailable: {r.stderr.strip().splitlines()[-1:]})" for n in names}
    return json.loads(r.stdout)


def _source_digest(t: Target) -> str:
    """sha256 of the module under mutation: a kept work folder is reused only while it
    holds mutants of exactly this code."""
    return hashlib.sha256((ROOT / t.path).read_bytes()).hexdigest()


def _restage(work: Path, t: Target) -> None:
    """Bring a kept work folder up to date except for the mutants: the current tests
    (mutmut copies them on into ``mutants/``) and every other source file."""
    for d in (work / "tests", work / "mutants" / "tests"):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=_ignore)
    mutated = _installed_path(t.path)
    for top, dest in PACKAGE_DIRS.items():
        for p in (ROOT / top).rglob("*.py"):
            if "__pycache__" in p.parts:
                continue
            rel = f"{dest}/{p.relative_to(ROOT / top).as_posix()}"
            if rel == mutated:
                continue
            for base in (work / "src", work / "mutants" / "src"):
                if base.exists():
                    (base / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, base / rel)


_NO_TESTS = ("no test of this module's selection calls the function: a test to add there "
             "(it may be tested by files outside the selection)")

_CHILD_PROCESS = ("runs only in the simulated camera's spawned child process, which imports "
                  "the installed package, not mutmut's mutated copy: no test can reach it "
                  "under mutation (its behaviour is checked end to end by "
                  "test_sim_camera_process: pacing, the stage's timing, no orphan, priority)")

#: Functions whose mutants no test in mutmut's process can reach, and why: their "no
#: tests" survivors carry this reason instead of "a test to add".
UNREACHABLE: dict[str, str] = {
    "x_camera_main": _CHILD_PROCESS,
    "x__lower_priority": _CHILD_PROCESS,
}


def _unreached(short: str, diff: str) -> str:
    """The reason a mutant no test called survives: its note, why its function cannot
    be reached (:data:`UNREACHABLE`), or a test to add."""
    return (_noted(short, diff) or UNREACHABLE.get(short.rpartition("__mutmut_")[0])
            or _NO_TESTS)


def env_for_score() -> dict[str, str]:
    """The environment mutmut runs in (and :func:`_score` its helpers): no PYTHONPATH, so
    the staged package is the one imported."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    return env


def _score(work: Path, t: Target, env: dict[str, str], wall_s: float) -> dict:
    """The module's entry of the results from the verdicts in *work*, with the digest of
    the source its mutants were made of (the kept stamp: the file may have changed
    while a long run went on, or before a ``--report``) and whether it has changed."""
    stamp = work / "source.sha256"
    now = _source_digest(t)
    ran_on = stamp.read_text() if stamp.exists() else now
    codes = _meta(work, t)
    statuses = {k: _status(v) for k, v in sorted(codes.items())}
    killed = sum(s == "killed" for s in statuses.values())
    # kills by time-out, said apart: a real hang is a kill (the suite would hang), but a
    # worker that inherited a held lock hangs too (see Target.isolation)
    timed_out = sum(v in TIMEOUT_CODES for v in codes.values())
    total = len(statuses)
    unchecked = sum(s == "not checked" for s in statuses.values())
    checked = total - unchecked
    alive = [n for n, s in statuses.items() if s not in ("killed", "not checked")]
    diffs = _diffs(work, env, "src/" + _installed_path(t.path), alive)
    survivors = []
    for name in alive:
        short = name.split(".")[-1]
        # a note wins over "no tests": a mutant no test can reach may be equivalent
        reason = (_unreached(short, diffs.get(name, ""))
                  if statuses[name] == "no tests" else _reason(short, diffs.get(name, "")))
        survivors.append({"mutant": short, "status": statuses[name],
                          "diff": diffs.get(name, ""), "reason": reason})
    score = killed / checked if checked else 0.0
    # survivors that change only words a user reads (a message, --help): counted in the
    # score like every survivor, and said apart, with the score they would leave
    text_only = sum(r["reason"].startswith(_TEXT_ONLY) for r in survivors)
    runs = work / "runs.txt"
    how = runs.read_text().strip().splitlines() if runs.exists() else []
    return {"module": t.path, "import": _module_name(t.path), "tests": list(t.tests),
            "deselected": [{"test": test, "why": why} for test, why in t.deselect],
            "mutants": total, "checked": checked, "killed": killed,
            "killed_by_timeout": timed_out, "score": round(score, 4),
            "survivors_text_only": text_only,
            "score_without_text_only": round(killed / (checked - text_only), 4)
            if checked > text_only else 0.0,
            "target": t.target,
            "meets_target": score >= t.target,
            "complete": unchecked == 0, "runs": how, "wall_s": round(wall_s, 1),
            "source_sha256": ran_on[:16], "source_changed_since": ran_on != now,
            "survivors": survivors}


def run_target(t: Target, max_children: int, keep: bool, work_root: Path | None = None,
               survivors: bool = False, run: bool = True,
               patterns: tuple[str, ...] = ()) -> dict:
    """Mutate one module and score it.

    With *work_root* the module's folder (``work_root/<name>``) is kept between runs: a
    second run of unchanged sources resumes where the first stopped, and with
    *survivors* re-tests only the mutants that were not killed, against the current
    tests (after adding tests for them). Changed sources start afresh.
    """
    if work_root is None:
        work = Path(tempfile.mkdtemp(prefix=f"inscope-mutation-{t.name}-"))
        fresh = True
    else:
        work = work_root.resolve() / t.name
        stamp = work / "source.sha256"
        digest = _source_digest(t)
        if not run:  # --report: score what is kept, whatever source its mutants are of
            if not _meta(work, t):
                raise SystemExit(f"mutation: no kept run of {t.name} in {work_root}")
            return _score(work, t, env_for_score(), 0.0)
        fresh = not (stamp.exists() and stamp.read_text() == digest and _meta(work, t))
        if fresh:
            shutil.rmtree(work, ignore_errors=True)
    env = env_for_score()
    t0 = time.monotonic()
    try:
        names: list[str] = []
        if not run:  # (without --work there is nothing kept to score)
            raise SystemExit("mutation: --report needs --work")
        if fresh:
            work.mkdir(parents=True, exist_ok=True)
            _stage(work, t)
            if work_root is not None:
                stamp.write_text(digest)
            # --mutants on a first run: only those (the rest stay unchecked: partial)
            names = list(patterns)
            how = (f"first run of the mutants matching {', '.join(patterns)} only"
                   if patterns else "full run")
        else:
            _restage(work, t)
            _stage_config(work, t)
            if survivors:
                names = [k for k, v in _meta(work, t).items()
                         if _status(v) not in ("killed", "not checked")
                         and (not patterns or any(fnmatch.fnmatch(k, p) for p in patterns))]
                how = (f"kept run; {len(names)} surviving mutants"
                       f"{' matching ' + ', '.join(patterns) if patterns else ''} re-run on "
                       "the current tests")
            elif patterns:
                names = list(patterns)
                how = f"kept run; mutants matching {', '.join(patterns)} re-run"
            else:
                how = "kept run, resumed"
        if not fresh and survivors and not names:
            r = subprocess.CompletedProcess([], 0, "", "")
        else:
            kept = {} if fresh else _meta(work, t)
            cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children),
                   *names]
            r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            if kept and names and r.returncode == 0 and _meta_path(work, t).exists():
                path = _meta_path(work, t)
                data = json.loads(path.read_text())
                data["exit_code_by_key"] = merge_verdicts(
                    kept, data.get("exit_code_by_key", {}), names)
                path.write_text(json.dumps(data, indent=4))
        if r.returncode != 0 or not _meta(work, t):
            tail = (r.stdout + r.stderr)[-4000:]
            raise SystemExit(f"mutation: mutmut failed on {t.name} (exit {r.returncode}); "
                             f"its output ends:\n{tail}")
        with (work / "runs.txt").open("a") as f:
            f.write(how + "\n")
        return _score(work, t, env, time.monotonic() - t0)
    finally:
        if work_root is not None or keep:
            print(f"  kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", choices=[t.name for t in TARGETS],
                    help="only this module (repeatable); default: all")
    ap.add_argument("--max-children", type=int, default=2,
                    help="mutants tested in parallel (default 2)")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="JSON results (default benchmarks/results/mutation.json); with "
                         "--module, the other modules' entries in it are kept")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep each module's mutants and verdicts in WORK/<module> (outside "
                         "the checkout): a rerun of unchanged sources resumes there")
    ap.add_argument("--report", action="store_true",
                    help="with --work: only score the kept runs (no mutmut run)")
    ap.add_argument("--mutants", action="append", default=[], metavar="GLOB",
                    help="with --work: only the mutants whose name matches, e.g. "
                         "'*FocusLock*' (repeatable); on a first run the others stay "
                         "unchecked (a partial score)")
    ap.add_argument("--survivors", action="store_true",
                    help="with --work: re-test only the mutants that survived the kept "
                         "run, against the current tests (after adding tests for them)")
    a = ap.parse_args(argv)
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("mutation: mutmut is not installed; pip install -e '.[test,mutation]'",
              file=sys.stderr)
        return 2
    chosen = [t for t in TARGETS if not a.module or t.name in a.module]
    old: dict[str, dict] = {}
    rows = []
    for t in chosen:
        print(f"mutating {t.path} (tests: {', '.join(t.tests)}) ...", flush=True)
        res = run_target(t, a.max_children, a.keep, a.work, a.survivors, not a.report,
                         tuple(a.mutants) or (() if a.survivors else t.mutants))
        rows.append(res)
        old = _merged_results(a.out, rows) if a.module else {r["module"]: r for r in rows}
        left = "" if res["complete"] else f" ({res['mutants'] - res['checked']} not checked)"
        print(f"  {res['killed']}/{res['checked']} killed = {100 * res['score']:.1f}% "
              f"(target {100 * t.target:.0f}%), {len(res['survivors'])} survivors{left}, "
              f"{res['wall_s']:.0f} s", flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(_report(old), indent=1) + "\n")  # after each module
    out = _report(old)
    print(f"\n{'module':28s} {'mutants':>8s} {'checked':>8s} {'killed':>7s} {'score':>7s} "
          f"{'target':>7s}")
    for m in out["modules"]:
        print(f"{m['module']:28s} {m['mutants']:8d} {m.get('checked', m['mutants']):8d} "
              f"{m['killed']:7d} {100 * m['score']:6.1f}% {100 * m['target']:6.0f}%")
    print(f"wrote {a.out.relative_to(ROOT) if a.out.is_relative_to(ROOT) else a.out}")
    return 0 if all(m["meets_target"] for m in rows) else 1


def _merged_results(path: Path, rows: list[dict]) -> dict[str, dict]:
    """The entries of *path* as it is now, with this run's *rows* replacing theirs.

    Read again before every write, not once at start: a module's run takes up to ~40
    minutes, and another ``--module`` run that finished meanwhile must keep its entry
    (reading once, the run that ended last dropped the other's).
    """
    merged: dict[str, dict] = {}
    if path.exists():
        merged = {m["module"]: m for m in json.loads(path.read_text()).get("modules", [])}
    merged.update({r["module"]: r for r in rows})
    return merged


def _report(modules: dict[str, dict]) -> dict:
    order = [t.path for t in TARGETS]
    return {
        "tool": f"mutmut {_version('mutmut')}",
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpus": os.cpu_count()},
        "command": "python -m benchmarks.mutation",
        "modules": sorted(modules.values(), key=lambda m: order.index(m["module"])
                          if m["module"] in order else len(order)),
    }


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    sys.exit(main())

