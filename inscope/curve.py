"""ZMQ CURVE authentication: key pairs, the allowed-clients list, ``inscope keys``.

A service that binds its ZMQ sockets to anything but loopback accepts stage commands
from the network, so it must know who is talking: CURVE (built into libzmq) encrypts
every message and, with a ZAP authenticator, admits only clients whose public key is in
a folder of allowed keys. The layout ``inscope keys init DIR`` makes::

    DIR/server.key             the service's public key (give it to every client)
    DIR/server.key_secret      the service's secret key (stays on the microscope PC)
    DIR/allowed_clients/       public keys of the clients that may connect
    DIR/clients/NAME.key(_secret)  one client's key pair (hand both to that client)

``inscope keys add-client DIR NAME`` makes another client pair and allows it; deleting a
file from ``allowed_clients/`` revokes that client (the service reads the folder when it
starts). Key files are the standard ZMQ certificate files (``zmq.auth``), so a client in
any language can use them.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

SERVER_SECRET = "server.key_secret"
SERVER_PUBLIC = "server.key"
ALLOWED = "allowed_clients"
CLIENTS = "clients"

LOOPBACK_NAMES = ("localhost",)


def is_loopback(bind: str) -> bool:
    """True if *bind* (an address given to ``--bind``) only accepts local connections."""
    host = bind.strip().strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", "0.0.0.0"-likes and interface names reach the network
        return False


def setup_hint(bind: str) -> str:
    """How to set CURVE up (part of every refusal)."""
    return (f"binding ZMQ to {bind!r} accepts stage commands from the network, so it "
            "needs CURVE keys: run 'inscope keys init keys' once, then start with "
            "'--curve-keys keys' (or set [outputs.zmq] curve_server_key = "
            "\"keys/server.key_secret\" and curve_allowed_clients = "
            "\"keys/allowed_clients\"), and give each client keys/server.key and its own "
            "keys/clients/NAME.key_secret; or bind 127.0.0.1.")


@dataclass(frozen=True)
class CurveServerKeys:
    """The service's key pair and the folder of allowed client public keys."""

    public: bytes
    secret: bytes
    allowed_dir: Path

    @classmethod
    def load(cls, server_secret: str | Path, allowed_dir: str | Path) -> CurveServerKeys:
        """Read the key files; one clear error if they are missing or wrong."""
        import zmq.auth

        sk, ad = Path(server_secret), Path(allowed_dir)
        if not sk.is_file():
            raise ValueError(f"CURVE server key {sk} not found; make one with 'inscope keys "
                             "init DIR' and point curve_server_key at DIR/server.key_secret.")
        if not ad.is_dir():
            raise ValueError(f"CURVE allowed-clients folder {ad} not found; make it with "
                             "'inscope keys init DIR' (DIR/allowed_clients).")
        try:
            public, secret = zmq.auth.load_certificate(sk)
        except (ValueError, OSError) as e:
            raise ValueError(f"CURVE server key {sk} cannot be read ({e}); regenerate it "
                             "with 'inscope keys init DIR'.") from None
        if not secret:
            raise ValueError(f"{sk} holds no secret key; give the '.key_secret' file.")
        if not any(ad.glob("*.key")):
            raise ValueError(f"no client is allowed: {ad} holds no '*.key' public key; add "
                             "one with 'inscope keys add-client DIR NAME'.")
        return cls(public, secret, ad)

    def apply(self, sock) -> None:
        """Make *sock* a CURVE server (call before bind)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True


class Authenticator:
    """A ZAP handler on *context* that admits only the allowed client keys."""

    def __init__(self, context, keys: CurveServerKeys) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self._auth: ThreadAuthenticator | None = ThreadAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(keys.allowed_dir))

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def apply_client(sock, client_secret: str | Path, server_public: str | Path) -> None:
    """Make *sock* a CURVE client with its key pair and the server's public key."""
    import zmq.auth

    pub, sec = zmq.auth.load_certificate(Path(client_secret))
    if not sec:
        raise ValueError(f"{client_secret} holds no secret key; give the client's "
                         "'.key_secret' file.")
    server_pub, _ = zmq.auth.load_certificate(Path(server_public))
    sock.curve_secretkey = sec
    sock.curve_publickey = pub
    sock.curve_serverkey = server_pub


def _private(secret: str | Path) -> None:
    """Make a secret key file readable by its owner only. pyzmq writes it with the
    process' umask (0644 under the usual 022): anyone on the microscope PC could read the
    key and command the stage. (A new keys folder is made 0700 as well.)"""
    os.chmod(secret, 0o600)


def init_keys(folder: str | Path, client: str = "client") -> dict[str, Path]:
    """Make the server pair, the allowed-clients folder and a first client pair.

    Refuses to overwrite an existing server key (clients hold its public half).
    """
    import zmq.auth

    d = Path(folder)
    if (d / SERVER_SECRET).exists():
        raise FileExistsError(f"{d / SERVER_SECRET} exists; keep it (clients trust it) or "
                              "delete the folder to start over.")
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(f"{d} is a file; give a folder for the keys.")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    _private(zmq.auth.create_certificates(d, "server")[1])
    (d / ALLOWED).mkdir(exist_ok=True)
    return {"server_public": d / SERVER_PUBLIC, "server_secret": d / SERVER_SECRET,
            "allowed": d / ALLOWED, **add_client(d, client)}


def add_client(folder: str | Path, name: str) -> dict[str, Path]:
    """Make a client key pair in ``DIR/clients`` and allow its public key."""
    import zmq.auth

    d = Path(folder)
    if not (d / SERVER_SECRET).is_file():
        raise FileNotFoundError(f"{d} holds no server key; run 'inscope keys init {d}' "
                                "first.")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"client name {name!r}: use letters, digits, '-' and '_'.")
    cd = d / CLIENTS
    cd.mkdir(exist_ok=True)
    if (cd / f"{name}.key").exists():
        raise FileExistsError(f"client {name!r} exists ({cd / (name + '.key')}); choose "
                              "another name.")
    pub, sec = zmq.auth.create_certificates(cd, name)
    _private(sec)
    (d / ALLOWED).mkdir(exist_ok=True)
    shutil.copyfile(pub, d / ALLOWED / f"{name}.key")
    return {"client_public": Path(pub), "client_secret": Path(sec)}


# -- CLI -------------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "keys", help="make ZMQ CURVE key pairs (needed to bind beyond 127.0.0.1)",
        description="Make the key pairs that authenticate ZMQ clients (CURVE). 'init DIR' "
                    "makes the service's pair, DIR/allowed_clients and a first client pair; "
                    "'add-client DIR NAME' makes and allows another client. Then run "
                    "'inscope run --bind 0.0.0.0 --curve-keys DIR'.")
    sub = p.add_subparsers(dest="keys_cmd", metavar="ACTION", required=True)
    i = sub.add_parser("init", help="server pair + allowed-clients folder + a client pair",
                       formatter_class=p.formatter_class)
    i.add_argument("dir", help="folder for the keys (created)")
    i.add_argument("--client", default="client", help="name of the first client")
    i.set_defaults(func=cmd_keys)
    a = sub.add_parser("add-client", help="make and allow another client key pair",
                       formatter_class=p.formatter_class)
    a.add_argument("dir", help="the folder made by 'inscope keys init'")
    a.add_argument("name", help="client name (letters, digits, '-', '_')")
    a.set_defaults(func=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> int:
    try:
        if args.keys_cmd == "init":
            paths = init_keys(args.dir, args.client)
        else:
            paths = add_client(args.dir, args.name)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for k, v in paths.items():
        print(f"{k:14s} {v}")
    if args.keys_cmd == "init":
        print(f"start the service with --curve-keys {args.dir}; a client needs "
              f"{paths['server_public']} and {paths['client_secret']}.")
    return 0
