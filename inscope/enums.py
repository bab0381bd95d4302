"""The closed vocabularies of inscope, each defined once, as string enums.

Control modes, microscope backends, record formats, target policies, steering and focus
statuses and time-stamp names are :class:`enum.StrEnum` members: each member *is* its
string value (``Mode.STEER == "steer"``, ``f"{Mode.STEER}" == "steer"``), so JSON on the
wire, TOML files and CLI flags read and write exactly the strings they always did, while
code compares members instead of spelling strings (or testing substrings) again. CLI
``choices``, config validation and command replies all iterate these enums; there is no
second list.

:func:`parse_target` is the one parser of target specs, used by the CLI, the TOML config,
the ZMQ ``set_target`` command and :func:`inscope.control.targets.policy_from_spec`.

This module imports nothing but the standard library, so the CLI can build its
``--help`` from it instantly.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AutofocusIssue",
    "Backend",
    "Name",
    "FocusStatus",
    "Mode",
    "RecordFormat",
    "Spinning",
    "Stamp",
    "SteerStatus",
    "TargetKind",
    "parse_target",
]


class Name(StrEnum):
    """A string enum that also *reprs* as its value (``'steer'``), so messages that
    quote a value (``{mode!r}``, argparse's "invalid choice ... (choose from ...)") read
    exactly as they did with plain strings."""

    def __repr__(self) -> str:
        return repr(self.value)


class Mode(Name):
    """What the live loop does with detections (``--mode``, ``[control] mode``,
    ``set_mode``)."""

    OFF = "off"  # detect only
    TRACK = "track"  # track ids, no moves
    STEER = "steer"  # center the target
    FOCUS = "focus"  # focus lock on the target
    STEER_FOCUS = "steer+focus"

    @classmethod
    def parse(cls, value: object) -> Mode:
        """*value* as a :class:`Mode`; a ValueError naming the modes otherwise."""
        if isinstance(value, str) and value in tuple(cls):
            return cls(value)
        raise ValueError(f"unknown control mode {value!r}; use one of {', '.join(cls)}.")

    @property
    def steers(self) -> bool:
        """The stage is steered to the target in this mode."""
        return self in (Mode.STEER, Mode.STEER_FOCUS)

    @property
    def focuses(self) -> bool:
        """The focus lock runs in this mode."""
        return self in (Mode.FOCUS, Mode.STEER_FOCUS)

    @property
    def moves(self) -> bool:
        """Anything is moved in this mode (``off`` and ``track`` never move)."""
        return self.steers or self.focuses


class Backend(Name):
    """Where frames come from (``--backend``, ``[microscope] backend``); what each opens:
    :data:`inscope.acquisition.factory.BACKENDS`."""

    SIM = "sim"
    HEADLESS = "headless"
    MM = "mm"
    REPLAY = "replay"
    SLIDE = "slide"


class RecordFormat(Name):
    """Per-frame record files (``--record-format``, ``[outputs.records] format``)."""

    JSONL = "jsonl"
    CSV = "csv"


class TargetKind(Name):
    """The target policies (``--target``, ``[control] target``, ``set_target``); an
    integer (or ``id:<n>``) picks a track id instead."""

    NEAREST = "nearest"  # nearest to the image center
    LARGEST = "largest"
    SCORE = "score"  # the most confident detection
    CLASS = "class"  # ``class:<name>``: nearest among one class


class SteerStatus(Name):
    """``status`` of a steering action (:class:`inscope.control.steering.SteerAction`)
    and of the live loop's steering state. The values are the wire format (British
    ``centred`` included); the member names are US spelling."""

    MOVED = "moved"
    DRY_RUN = "dry-run"  # move computed, not made
    REFUSED = "refused"  # the guard said no
    FAILED = "failed"  # device error
    CENTERED = "centred"  # within the deadband, target seen
    SETTLING = "settling"  # frame exposed before the last move settled
    NO_TARGET = "no-target"
    NO_POSITION = "no-position"  # frame without a stage position
    DISABLED = "disabled"
    NOT_SEEN = "not-seen"  # target neither detected nor registered in this frame
    MOVING = "moving"  # live loop: frame exposed during a move
    WAITING_FOCUS = "waiting-focus"  # live loop: the focus lock is measuring


class FocusStatus(Name):
    """``status`` of a focus-lock action (:class:`inscope.control.focus.FocusAction`):
    the lock's state, or an outcome that is not one (a move not made, an unusable
    frame)."""

    ACQUIRING = "acquiring"  # finding the peak
    CHECKING = "checking"  # checking the peak while holding
    CORRECTING = "correcting"
    LOCKED = "locked"
    LOST = "lost"
    SETTLING = "settling"
    MOVING = "moving"
    REFUSED = "refused"
    FAILED = "failed"
    DRY_RUN = "dry-run"
    DISABLED = "disabled"
    NO_POSITION = "no-position"

    @staticmethod
    def is_state(status: str) -> bool:
        """*status* is a state of the lock (False: a move not made, a frame without a
        position, the lock disabled)."""
        return status not in (FocusStatus.REFUSED, FocusStatus.FAILED, FocusStatus.DRY_RUN,
                              FocusStatus.DISABLED, FocusStatus.NO_POSITION)


class AutofocusIssue(Name):
    """Why an autofocus sweep is not ``ok`` (:attr:`inscope.control.focus.FocusResult.
    issues`): callers decide on these, never on the wording of its message."""

    REFUSED = "refused"  # a focus move was refused (soft limit, device error)
    EDGE = "edge"  # the sharpest image is at an end of the sweep: no peak inside it
    FLAT = "flat"  # no sharpness peak at all (a featureless field): focus left at start


class Spinning(Name):
    """What ONNX Runtime's idle intra-op threads do (``[detector] spinning``, ``inscope
    bench --spinning``; :func:`inscope.detector.providers.spinning_mode`)."""

    OFF = "off"  # they sleep; the next parallel section wakes them
    RUN = "run"  # they spin between a run's operators, and sleep once it returns
    ON = "on"  # they also spin for a while after a run (ONNX Runtime's own default)


class Stamp(Name):
    """Time-stamp names (``time.monotonic_ns()``) in ``Frame.stamps``, in the order a
    frame meets them; the keys of ``stamps_ns`` in every detections message."""

    READY = "ready"  # the frame's pixels are in host memory (set by the backend)
    EXPOSURE_MID = "exposure_mid"  # middle of the exposure (display prediction)
    DEQUEUED = "dequeued"  # the detect thread took it
    DETECT_START = "detect_start"
    DETECT_END = "detect_end"
    PUBLISHED = "published"  # the result was handed to every output
    SENT = "sent"  # the ZMQ detections message left the PUB socket
    CONTROL_START = "control_start"
    CONTROL_END = "control_end"
    MOVE_COMMANDED = "move_commanded"  # the guard recorded a move for this frame


_TARGET_ALIASES: dict[str, TargetKind] = {
    "center": TargetKind.NEAREST, "centre": TargetKind.NEAREST,
    "size": TargetKind.LARGEST, "area": TargetKind.LARGEST,
    "highest": TargetKind.SCORE, "confidence": TargetKind.SCORE,
}

_TARGET_HELP = ("use nearest, largest, score, class:<name> (e.g. class:mitotic) or an "
                "integer track id (e.g. 7)")


def parse_target(target: object, target_class: str | None = None) -> str | int:
    """The canonical form of a target spec: a :class:`TargetKind` value,
    ``"class:<name>"`` or an integer track id.

    Accepts every form the CLI, the TOML config and ``set_target`` document: a policy
    name (``nearest``, ``largest``, ``score``; case and spaces ignored, plus the aliases
    ``center``/``centre``, ``size``/``area``, ``highest``/``confidence``),
    ``class:<name>``, ``class`` with *target_class*, an integer or digit string (a track
    id), ``id:<n>``.

    Raises
    ------
    ValueError
        One line naming the bad spec and the forms that work.
    """
    if isinstance(target, bool) or not isinstance(target, str | int):
        raise ValueError(f"target {target!r} is not a target; {_TARGET_HELP}.")
    if isinstance(target, int):
        if target < 0:
            raise ValueError(f"track id {target} is negative; track ids are >= 0.")
        return int(target)
    s = target.strip()
    if s.isdigit():
        return int(s)
    key, sep, arg = s.partition(":")
    key, arg = key.strip().lower(), arg.strip()
    if key in _TARGET_ALIASES and not sep:
        return str(_TARGET_ALIASES[key])
    if key in (TargetKind.NEAREST, TargetKind.LARGEST, TargetKind.SCORE) and not sep:
        return str(TargetKind(key))
    if key == TargetKind.CLASS:
        name = arg if sep else (target_class or "").strip()
        if not name:
            raise ValueError(
                f"target {target!r} needs a class name: 'class:mitotic' (CLI, TOML, "
                "set_target), or target 'class' with [control] target_class = \"mitotic\" "
                "or set_target's \"class\": \"mitotic\".")
        return f"{TargetKind.CLASS}:{name}"
    if key in ("id", "track"):
        if arg.isdigit():
            return int(arg)
        raise ValueError(f"target {target!r} needs a track id: give the integer (e.g. 7) "
                         "or 'id:7'.")
    raise ValueError(f"unknown target policy {target!r}; {_TARGET_HELP}.")
