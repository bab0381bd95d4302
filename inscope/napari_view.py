"""A live napari view of what inscope sees: the current image, the boxes as a Shapes layer,
each box labelled with its class, track id and score, the steering target drawn apart.

Two sources feed it, both polled on napari's (Qt's) GUI thread by a timer, so napari layers
are only ever touched from that thread:

* in-process: :class:`NapariOutput`, an inscope output the pipeline hands each result to;
* another process: :class:`ZmqSource`, a SUB socket on a running ``inscope run`` /
  ``inscope demo`` (``detections`` messages; ``overlay`` frames when that process runs with
  ``--zmq-overlay``, else the boxes are drawn on a blank frame of the camera's size).

Paste-able use, beside a running ``inscope demo`` (``pip install inscope[napari]``)::

    import napari
    from inscope.napari_view import NapariLiveView, ZmqSource

    viewer = napari.Viewer()
    view = NapariLiveView(viewer)
    view.follow(ZmqSource("tcp://127.0.0.1:5556"))   # polls ~30 times a second
    napari.run()

Works on a ``napari.Viewer`` and on napari's GL-free ``napari.components.ViewerModel``.
napari is an optional dependency: this module imports it only when a view is made.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from inscope.outputs import Output
from inscope.schema import TOPIC_DETECTIONS, TOPIC_OVERLAY, loads


def _unshadow_qt_plugins() -> None:
    """opencv-python (with its own Qt) points ``QT_QPA_PLATFORM_PLUGIN_PATH`` at its
    bundled plugins when cv2 is imported; napari's PyQt then loads those plugins, built for
    another Qt, and aborts ("Could not load the Qt platform plugin xcb"). Drop cv2's
    setting so napari's Qt uses its own plugins; OpenCV windows are not used with napari."""
    import os

    for key in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        v = os.environ.get(key, "")
        if "cv2" in v.replace("\\", "/").split("/"):
            del os.environ[key]


_unshadow_qt_plugins()

IMAGE_LAYER = "inscope frame"
BOXES_LAYER = "inscope boxes"
#: Edge colours (RGBA): the steering target apart from every other box.
TARGET_COLOR = [1.0, 0.0, 1.0, 1.0]
BOX_COLOR = [1.0, 1.0, 0.0, 1.0]


@dataclass
class Update:
    """One thing to show: a frame (or None to keep the last) and its detections message
    (the ZMQ ``inscope.detections/1`` schema)."""

    image: np.ndarray | None
    message: dict[str, Any]


class Source(Protocol):
    def poll(self) -> Update | None:
        """The newest update since the last call, or None; never blocks."""
        ...


def box_label(d: dict[str, Any], target_id: int | None) -> str:
    """Text drawn at a box: ``"cell #4 0.93"``; the target gets a leading ``"TARGET "``."""
    tid = d.get("track_id")
    text = f"{d.get('class', 'cell')}" + (f" #{tid}" if tid is not None else "")
    text += f" {float(d.get('score', 0.0)):.2f}"
    if tid is not None and target_id is not None and int(tid) == int(target_id):
        text = "TARGET " + text
    return text


def rectangles(message: dict[str, Any]) -> list[np.ndarray]:
    """The message's boxes as napari rectangles: 4 corners each, in (row, column) order."""
    out = []
    for d in message.get("detections", []):
        x0, y0, x1, y1 = (float(v) for v in d["box_px"])
        out.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float))
    return out


class NapariLiveView:
    """Keeps two layers of a napari viewer up to date with inscope's newest result.

    Parameters
    ----------
    viewer
        A ``napari.Viewer`` (or the GL-free ``napari.components.ViewerModel``).
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.frame_index: int | None = None
        self.shown = 0
        self._timer: Any = None
        self._source: Source | None = None

    # -- layers ------------------------------------------------------------------------
    def _image_layer(self, image: np.ndarray):
        layers = self.viewer.layers
        if IMAGE_LAYER in layers:
            layer = layers[IMAGE_LAYER]
            if layer.data.shape == image.shape and layer.data.dtype == image.dtype:
                layer.data = image
                return layer
            layers.remove(IMAGE_LAYER)
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
        layer = self.viewer.add_image(image, name=IMAGE_LAYER, rgb=rgb)
        layers.move(layers.index(IMAGE_LAYER), 0)  # keep the boxes on top
        return layer

    def _boxes_layer(self):
        layers = self.viewer.layers
        if BOXES_LAYER in layers:
            return layers[BOXES_LAYER]
        return self.viewer.add_shapes(
            [], shape_type="rectangle", name=BOXES_LAYER, edge_width=2,
            face_color="transparent", edge_color="yellow",
            features={"label": np.array([], dtype=object),
                      "track_id": np.array([], dtype=float),
                      "score": np.array([], dtype=float),
                      "target": np.array([], dtype=bool)},
            text={"string": "{label}", "anchor": "upper_left", "color": "yellow",
                  "size": 10})

    def show(self, update: Update) -> None:
        """Show *update* (call on the GUI thread)."""
        msg = update.message
        if update.image is not None:
            self._image_layer(update.image)
        elif IMAGE_LAYER not in self.viewer.layers and msg.get("shape"):
            self._image_layer(np.zeros(tuple(msg["shape"][:2]), np.uint8))
        layer = self._boxes_layer()
        dets = msg.get("detections", [])
        target = msg.get("target_id")
        rects = rectangles(msg)
        labels = [box_label(d, target) for d in dets]
        tids = [np.nan if d.get("track_id") is None else float(d["track_id"]) for d in dets]
        is_target = [target is not None and d.get("track_id") is not None
                     and int(d["track_id"]) == int(target) for d in dets]
        layer.selected_data = set()
        layer.data = []
        if rects:
            layer.add_rectangles(rects, edge_color=np.array(
                [TARGET_COLOR if t else BOX_COLOR for t in is_target]))
        layer.features = {"label": np.array(labels, dtype=object),
                          "track_id": np.array(tids, dtype=float),
                          "score": np.array([float(d.get("score", 0.0)) for d in dets]),
                          "target": np.array(is_target, dtype=bool)}
        layer.text.refresh(layer.features)
        self.frame_index = msg.get("frame_index")
        self.shown += 1

    # -- feeding -----------------------------------------------------------------------
    def update_from(self, source: Source) -> bool:
        """Show the newest update of *source*, if any (GUI thread). True if one was shown."""
        u = source.poll()
        if u is None:
            return False
        self.show(u)
        return True

    def follow(self, source: Source, interval_ms: int = 33) -> Any:
        """Poll *source* every *interval_ms* on the Qt GUI thread (needs a Qt application,
        which ``napari.Viewer()`` makes); returns the ``QTimer``."""
        from qtpy.QtCore import QTimer

        self.stop()
        self._source = source
        timer = QTimer()
        timer.setInterval(int(interval_ms))
        def tick() -> None:
            self.update_from(source)

        timer.timeout.connect(tick)
        timer.start()
        self._timer = timer
        return timer

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None


class NapariOutput(Output):
    """An inscope output for an in-process napari view: keeps the newest result for the
    GUI thread's timer (:meth:`NapariLiveView.follow`); never blocks the loop."""

    name = "napari"
    queue_size = 2

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._newest: Update | None = None

    def handle(self, item: Any) -> None:
        msg, _ = item.message()
        with self._lock:
            self._newest = Update(item.frame.pixels, msg)

    def poll(self) -> Update | None:
        with self._lock:
            u, self._newest = self._newest, None
        return u


class ZmqSource:
    """The detections (and overlay frames, if published) of another inscope process.

    Parameters
    ----------
    address
        The PUB address of ``inscope run`` / ``demo`` (default ``tcp://127.0.0.1:5556``).
    overlay
        Also subscribe to the rendered ``overlay`` frames (the other process must run with
        ``--zmq-overlay``); they replace the blank frame under the boxes.
    """

    def __init__(self, address: str = "tcp://127.0.0.1:5556", *, overlay: bool = True,
                 context: Any = None) -> None:
        import zmq

        self._zmq = zmq
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 10)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC_DETECTIONS)
        if overlay:
            self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC_OVERLAY)
        self.sock.connect(address)
        self._overlay: tuple[int, np.ndarray] | None = None
        self._last: dict[str, Any] | None = None
        self.received = 0

    def poll(self) -> Update | None:
        """Drain what has arrived (never blocks) and return the newest detections, with
        the overlay frame of the same camera frame when there is one."""
        zmq = self._zmq
        newest = None
        fresh_overlay = False
        while True:
            try:
                parts = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            if parts[0] == TOPIC_DETECTIONS:
                newest = loads(parts[1])
                self.received += 1
            elif parts[0] == TOPIC_OVERLAY and len(parts) == 3:
                head = loads(parts[1])
                img = np.frombuffer(parts[2], head["dtype"]).reshape(head["shape"])
                if img.ndim == 3:
                    img = img[..., ::-1]  # BGR -> RGB for napari
                self._overlay = (int(head["frame_index"]), np.ascontiguousarray(img))
                fresh_overlay = True
        if newest is None:
            # the overlay of the frame already shown may come after its detections
            last, ov = self._last, self._overlay
            if fresh_overlay and last is not None and ov is not None and \
                    ov[0] == last.get("frame_index"):
                return Update(ov[1], last)
            return None
        self._last = newest
        image = None
        if self._overlay is not None and self._overlay[0] == newest.get("frame_index"):
            image = self._overlay[1]
        return Update(image, newest)

    def close(self) -> None:
        self.sock.close(0)
