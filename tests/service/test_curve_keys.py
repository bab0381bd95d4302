"""``inscope keys`` and the CURVE key files a service bound beyond loopback depends on.

What a lab admin meets before the first remote client connects: the key folder's layout
(every path the command prints exists and is the file a client or the service needs),
client names, every refusal naming its fix in one line, and the service-side loading
of keys that are missing, unreadable or the wrong half. Real key files made by pyzmq's
``zmq.auth`` (libzmq's CURVE), real ZAP authenticator threads.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import zmq

from inscope.cli import main
from inscope.curve import (
    Authenticator,
    CurveServerKeys,
    add_client,
    apply_client,
    init_keys,
    is_loopback,
)


def _printed(out: str) -> dict[str, str]:
    """``name  path`` lines of ``inscope keys`` -> {name: path}."""
    rows = [line.split(None, 1) for line in out.splitlines() if line and "  " in line]
    return {k: v.strip() for k, v in rows}


def test_keys_init_makes_the_layout_it_prints(tmp_path, capsys):
    d = tmp_path / "lab" / "keys"  # parent folders are made too
    assert main(["keys", "init", str(d), "--client", "analysis-pc_2"]) == 0
    out = capsys.readouterr().out
    paths = _printed(out)
    assert paths == {
        "server_public": str(d / "server.key"),
        "server_secret": str(d / "server.key_secret"),
        "allowed": str(d / "allowed_clients"),
        "client_public": str(d / "clients" / "analysis-pc_2.key"),
        "client_secret": str(d / "clients" / "analysis-pc_2.key_secret"),
    }
    for p in paths.values():
        assert Path(p).exists(), p
    # the first client is allowed: its public key, byte for byte, in allowed_clients
    assert (d / "allowed_clients" / "analysis-pc_2.key").read_bytes() == \
        (d / "clients" / "analysis-pc_2.key").read_bytes()
    assert sorted(p.name for p in (d / "allowed_clients").iterdir()) == ["analysis-pc_2.key"]
    # the last line says how to start the service and what a client needs
    last = out.strip().splitlines()[-1]
    assert f"--curve-keys {d}" in last
    assert str(d / "server.key") in last and str(d / "clients" / "analysis-pc_2.key_secret") \
        in last
    # the service can load what was made
    keys = CurveServerKeys.load(d / "server.key_secret", d / "allowed_clients")
    assert len(keys.secret) == 40 and len(keys.public) == 40
    assert keys.public == zmq.auth.load_certificate(d / "server.key")[0]


def test_keys_init_default_client_and_the_function_api(tmp_path):
    paths = init_keys(tmp_path / "k")
    assert set(paths) == {"server_public", "server_secret", "allowed", "client_public",
                          "client_secret"}
    assert paths["client_secret"] == tmp_path / "k" / "clients" / "client.key_secret"
    more = add_client(tmp_path / "k", "scope2")
    assert set(more) == {"client_public", "client_secret"}
    assert more["client_public"] == tmp_path / "k" / "clients" / "scope2.key"
    assert (tmp_path / "k" / "allowed_clients" / "scope2.key").is_file()


def test_keys_init_in_a_folder_that_exists_without_a_server_key(tmp_path):
    """Starting over after deleting the server's pair keeps the folder and its list."""
    d = tmp_path / "keys"
    init_keys(d)
    for f in ("server.key", "server.key_secret"):
        (d / f).unlink()
    paths = init_keys(d, "second")
    assert paths["server_secret"].is_file()
    assert sorted(p.name for p in (d / "allowed_clients").iterdir()) == [
        "client.key", "second.key"]


def test_keys_init_refuses_a_file_for_a_folder(tmp_path, capsys):
    f = tmp_path / "keys"
    f.write_text("not a folder")
    assert main(["keys", "init", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {f} is a file; give a folder for the keys."
    assert f.read_text() == "not a folder"


@pytest.mark.parametrize("name", ["lab-pc", "lab_pc", "scope2", "a-b_c-3"])
def test_client_names_with_letters_digits_dash_and_underscore_pass(tmp_path, name):
    init_keys(tmp_path / "k")
    assert main(["keys", "add-client", str(tmp_path / "k"), name]) == 0
    assert (tmp_path / "k" / "allowed_clients" / f"{name}.key").is_file()


@pytest.mark.parametrize("name", ["", "lab pc", "../evil", "a/b", "x.y"])
def test_client_names_that_are_not_plain_words_are_refused(tmp_path, capsys, name):
    init_keys(tmp_path / "k")
    capsys.readouterr()
    assert main(["keys", "add-client", str(tmp_path / "k"), name]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: client name {name!r}: use letters, digits, '-' and '_'."
    assert sorted(p.name for p in (tmp_path / "k" / "allowed_clients").iterdir()) == [
        "client.key"]
    assert not (tmp_path / "evil.key").exists()


def test_a_name_of_dashes_and_underscores_alone_is_refused(tmp_path):
    init_keys(tmp_path / "k")
    with pytest.raises(ValueError, match="use letters, digits"):
        add_client(tmp_path / "k", "-_")  # (argparse would read it as an option)


def test_add_client_before_init_and_twice_say_what_to_do(tmp_path, capsys):
    d = tmp_path / "k"
    d.mkdir()
    assert main(["keys", "add-client", str(d), "lab"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {d} holds no server key; run 'inscope keys init {d}' first.")
    init_keys(d)
    before = (d / "clients" / "client.key_secret").read_bytes()
    assert main(["keys", "add-client", str(d), "client"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: client 'client' exists ({d / 'clients' / 'client.key'}); choose another "
        "name.")
    assert (d / "clients" / "client.key_secret").read_bytes() == before


def test_keys_without_an_action_names_the_actions(capsys):
    with pytest.raises(SystemExit) as e:
        main(["keys"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "ACTION" in err and "required" in err


# -- the service's side: loading the keys -------------------------------------------------
@pytest.fixture
def made(tmp_path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


def _load_error(secret, allowed) -> str:
    with pytest.raises(ValueError) as e:
        CurveServerKeys.load(secret, allowed)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_a_missing_server_key_names_the_command_that_makes_it(made):
    msg = _load_error(made / "nope.key_secret", made / "allowed_clients")
    assert msg == (f"CURVE server key {made / 'nope.key_secret'} not found; make one with "
                   "'inscope keys init DIR' and point curve_server_key at "
                   "DIR/server.key_secret.")


def test_a_missing_allowed_folder_names_the_command_that_makes_it(made):
    msg = _load_error(made / "server.key_secret", made / "allowed")
    assert msg == (f"CURVE allowed-clients folder {made / 'allowed'} not found; make it "
                   "with 'inscope keys init DIR' (DIR/allowed_clients).")


def test_an_unreadable_server_key_says_regenerate(made):
    bad = made / "garbled.key_secret"
    bad.write_bytes(b"\x00\xff not a certificate")
    msg = _load_error(bad, made / "allowed_clients")
    assert msg.startswith(f"CURVE server key {bad} cannot be read (")
    assert msg.endswith("); regenerate it with 'inscope keys init DIR'.")


def test_the_public_half_given_for_the_secret_key_is_refused(made):
    msg = _load_error(made / "server.key", made / "allowed_clients")
    assert msg == f"{made / 'server.key'} holds no secret key; give the '.key_secret' file."


def test_an_empty_allowed_folder_admits_nobody_and_says_so(made, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = _load_error(made / "server.key_secret", empty)
    assert msg == (f"no client is allowed: {empty} holds no '*.key' public key; add one "
                   "with 'inscope keys add-client DIR NAME'.")


def test_a_client_given_its_public_half_is_told_to_give_the_secret_one(made):
    sock = zmq.Context.instance().socket(zmq.REQ)
    try:
        with pytest.raises(ValueError) as e:
            apply_client(sock, made / "clients" / "client.key", made / "server.key")
        assert str(e.value) == (f"{made / 'clients' / 'client.key'} holds no secret key; "
                                "give the client's '.key_secret' file.")
        apply_client(sock, made / "clients" / "client.key_secret", made / "server.key")
    finally:
        sock.close(0)


def test_a_stopped_authenticator_leaves_no_thread_behind(made):
    """Each CURVE service runs a ZAP thread; a service closed in a long-lived process
    (a notebook building services in turn) must not leave it running."""
    keys = CurveServerKeys.load(made / "server.key_secret", made / "allowed_clients")
    ctx = zmq.Context()
    before = threading.active_count()
    try:
        auth = Authenticator(ctx, keys)
        assert threading.active_count() == before + 1
        auth.stop()
        assert threading.active_count() == before
        auth.stop()  # twice is harmless (close paths call it again)
    finally:
        ctx.destroy(linger=0)


@pytest.mark.parametrize("bind,local", [("[::1]", True), (" 127.0.0.1 ", True),
                                        ("[::]", False), ("localhost", True),
                                        ("0.0.0.0", False)])
def test_loopback_in_the_forms_a_bind_address_takes(bind, local):
    assert is_loopback(bind) is local
