"""Exposure (issue 10, item 2): CURVE authentication, binds beyond loopback, snapshots.

Real ZMQ sockets with CURVE forced on 127.0.0.1 (libzmq's own CURVE and ZAP), keys made
by the ``inscope keys`` command, a real pipeline on the simulated microscope.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import pytest
import zmq
from _support.sockets import req_socket, sub_socket

from inscope.cli import main
from inscope.config import Config, ConfigError, config_from_dict, with_overrides
from inscope.curve import is_loopback


@pytest.fixture
def keys(tmp_path) -> Path:
    d = tmp_path / "keys"
    assert main(["keys", "init", str(d)]) == 0
    assert main(["keys", "add-client", str(d), "intruder"]) == 0
    # the intruder's key pair exists but is not allowed: revoke it
    (d / "allowed_clients" / "intruder.key").unlink()
    return d


def _service(tmp_path, keys: Path):
    from inscope.service import build_service

    cfg = Config()
    cfg = with_overrides(cfg, "microscope", backend="sim",
                         options={"shape": [64, 64], "exposure_ms": 10.0, "seed": 1})
    cfg = with_overrides(cfg, "detector", model="classical")
    cfg = with_overrides(cfg, "outputs", window=False, snapshot_dir=str(tmp_path / "s"))
    cfg = with_overrides(cfg, "outputs.zmq", pub_port=0, rep_port=0,
                         curve_server_key=str(keys / "server.key_secret"),
                         curve_allowed_clients=str(keys / "allowed_clients"))
    cfg = with_overrides(cfg, "run", progress=False)
    return build_service(cfg, say=lambda *_: None)


def _req(address: str, keys: Path | None = None, client: str = "client") -> zmq.Socket:
    return req_socket(address, timeout_ms=1500, send_timeout_ms=1500, keys=keys,
                      client=client)


def _sub(address: str, keys: Path | None = None, client: str = "client") -> zmq.Socket:
    return sub_socket(address, topic=b"detections", keys=keys, client=client)


def test_curve_unauthenticated_clients_get_nothing_authorised_one_works(tmp_path, keys):
    from inscope.zmq_api import request

    svc = _service(tmp_path, keys)
    p = svc.pipeline
    plain_sub = _sub(svc.publisher.address)
    intruder_sub = _sub(svc.publisher.address, keys, "intruder")
    good_sub = _sub(svc.publisher.address, keys)
    try:
        p.start()
        deadline = time.monotonic() + 20
        while p.processed < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        # REP: a plain client and a client with an unlisted key get no reply at all
        for sock in (_req(svc.server.address), _req(svc.server.address, keys, "intruder")):
            # never connected: send (or recv) times out (EAGAIN); or the denied handshake
            # dropped the queued request and the REQ socket has nothing to wait for
            # (EFSM: seen once in a full suite run). Either way: no reply.
            with pytest.raises(zmq.ZMQError) as e:
                sock.send(b'{"cmd": "stop"}')
                sock.recv()
            assert e.value.errno in (zmq.EAGAIN, zmq.EFSM), e.value
            sock.close()
        assert p.running, "an unauthenticated stop must not reach the pipeline"
        # ... the authorised client is answered
        rep = request(svc.server.address, {"cmd": "status"},
                      client_key=keys / "clients" / "client.key_secret",
                      server_key=keys / "server.key")
        assert rep["ok"] and rep["processed"] >= 30
        # PUB: only the authorised subscriber receives detections
        got = good_sub.poll(3000)
        assert got and good_sub.recv_multipart()[0] == b"detections"
        assert not plain_sub.poll(500) and not intruder_sub.poll(200)
        assert request(svc.server.address, {"cmd": "stop"},
                       client_key=keys / "clients" / "client.key_secret",
                       server_key=keys / "server.key")["ok"]
        assert p.wait(10)
    finally:
        for s in (plain_sub, intruder_sub, good_sub):
            s.close()
        svc.close()


@pytest.mark.parametrize("bind", ["0.0.0.0", "*", "192.168.1.5", "eth0", "::"])
def test_bind_beyond_loopback_without_keys_is_refused_with_setup_advice(bind):
    with pytest.raises(ConfigError) as e:
        config_from_dict({"outputs": {"zmq": {"bind": bind}}}, "scope.toml")
    msg = str(e.value)
    assert "\n" not in msg and "inscope keys init" in msg and "--curve-keys" in msg
    assert not is_loopback(bind)


def test_bind_beyond_loopback_from_the_cli_is_refused(tmp_path, capsys):
    rc = main(["run", "--bind", "0.0.0.0", "--frames", "1", "--no-progress",
               "--summary", str(tmp_path / "s.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "inscope keys init" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.json").exists()


def test_loopback_names_and_curve_keys_pass(keys):
    for b in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(b)
    cfg = config_from_dict({"outputs": {"zmq": {
        "bind": "0.0.0.0", "curve_server_key": str(keys / "server.key_secret"),
        "curve_allowed_clients": str(keys / "allowed_clients")}}})
    assert cfg.outputs.zmq.bind == "0.0.0.0"
    with pytest.raises(ConfigError, match="both"):
        config_from_dict({"outputs": {"zmq": {"curve_server_key": "k"}}})


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_secret_keys_are_readable_by_their_owner_only(keys):
    import stat

    old = os.umask(0o022)  # the usual umask, under which pyzmq writes 0644
    try:
        assert main(["keys", "add-client", str(keys), "later"]) == 0
    finally:
        os.umask(old)
    secrets = sorted(keys.rglob("*.key_secret"))
    assert {p.name for p in secrets} == {"server.key_secret", "client.key_secret",
                                         "intruder.key_secret", "later.key_secret"}
    for p in secrets:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE(keys.stat().st_mode) & 0o077 == 0
    # the public halves stay shareable
    assert stat.S_IMODE((keys / "server.key").stat().st_mode) & 0o044


def test_keys_init_refuses_to_overwrite_the_server_key(keys, capsys):
    before = (keys / "server.key_secret").read_bytes()
    assert main(["keys", "init", str(keys)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (keys / "server.key_secret").read_bytes() == before


# -- snapshots ---------------------------------------------------------------------------
@pytest.fixture
def running(tmp_path):
    from inscope.acquisition.factory import open_microscope
    from inscope.detector.onnx_detector import load_detector
    from inscope.pipeline import Pipeline

    scope = open_microscope("sim", shape=(64, 64), exposure_ms=10.0, seed=1)
    p = Pipeline(scope, load_detector("classical"), snapshot_dir=tmp_path / "run" / "snaps",
                 snapshot_max_per_s=1000.0)
    p.start()
    deadline = time.monotonic() + 10
    while p.last_result is None and time.monotonic() < deadline:
        time.sleep(0.02)
    yield p
    p.stop()
    scope.close()


@pytest.mark.parametrize("bad", ["/tmp/evil", "../escape", "a/../../b", "..", "C:\\evil",
                                 "\\\\server\\share", 5, ["x"]])
def test_snapshot_refuses_folders_outside_the_run(running, tmp_path, bad):
    rep = running.command({"cmd": "snapshot", "dir": bad})
    assert rep["ok"] is False and "dir" in rep["error"]
    files = [q for q in tmp_path.rglob("*") if q.is_file()]
    assert files == []


def test_snapshots_in_one_second_never_overwrite_each_other(running, tmp_path):
    paths = set()
    for _ in range(20):
        rep = running.command({"cmd": "snapshot", "dir": "sub/one"})
        assert rep["ok"], rep
        paths.update(rep["paths"].values())
    assert len(paths) == 60  # 20 snapshots x (frame, overlay, detections)
    for q in paths:
        assert Path(q).is_file() and Path(q).stat().st_size > 0
        assert (tmp_path / "run" / "snaps" / "sub" / "one") in Path(q).parents


def test_snapshots_are_rate_limited(tmp_path):
    from inscope.snapshots import SnapshotPolicy, SnapshotRefused

    now = [0.0]
    pol = SnapshotPolicy(tmp_path, max_per_s=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        pol.acquire()
    with pytest.raises(SnapshotRefused, match="at most 2 per second"):
        pol.acquire()
    now[0] += 0.5  # one token back
    pol.acquire()
    with pytest.raises(SnapshotRefused):
        pol.acquire()
    assert pol.refused == 2


@contextlib.contextmanager
def _default_snapshots(tmp_path):
    """A running pipeline with the default snapshot rate limit, past its first frame."""
    from inscope.acquisition.factory import open_microscope
    from inscope.detector.onnx_detector import load_detector
    from inscope.pipeline import Pipeline

    scope = open_microscope("sim", shape=(64, 64), exposure_ms=10.0, seed=1)
    p = Pipeline(scope, load_detector("classical"), snapshot_dir=tmp_path / "snaps")
    p.start()
    try:
        deadline = time.monotonic() + 10
        while p.last_result is None and time.monotonic() < deadline:
            time.sleep(0.02)
        yield p
    finally:
        p.stop()
        scope.close()


def test_default_snapshot_rate_limit_refuses_a_burst(tmp_path):
    with _default_snapshots(tmp_path) as p:
        reps = [p.command({"cmd": "snapshot"}) for _ in range(50)]
    ok = sum(r["ok"] for r in reps)
    assert 1 <= ok <= 5, ok
    assert any("too many snapshots" in r.get("error", "") for r in reps)
    assert len(list((tmp_path / "snaps").glob("*_frame.tif"))) == ok


def test_a_refused_snapshot_folder_takes_no_token(tmp_path):
    """Three snapshots refused for their folder used to spend the burst's three tokens,
    so the next good request was told to wait (a client probing names locked itself
    out); a bad folder is now refused before a token is taken."""
    with _default_snapshots(tmp_path) as p:
        bad = [p.command({"cmd": "snapshot", "dir": f"../{c}"}) for c in "abcde"]
        good = p.command({"cmd": "snapshot", "dir": "ok"})
    assert all(not r["ok"] and "dir" in r["error"] for r in bad), bad
    assert good["ok"], good
    assert p.snapshots.refused == 0
    # the frame keeps its pixel size, as Fiji reads it (ImageJ resolution, unit µm)
    import tifffile

    with tifffile.TiffFile(good["paths"]["frame"]) as tf:
        assert tf.imagej_metadata["unit"] == "um"
        x_res = tf.pages[0].tags["XResolution"].value
        assert x_res[1] / x_res[0] == pytest.approx(p.last_result.frame.scale_um, rel=1e-6)
        assert tf.asarray().shape == p.last_result.frame.shape
