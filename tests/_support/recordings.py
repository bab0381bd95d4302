"""Recordings written the way their tools write them, for the replay tests: an NDTiff
dataset through ndstorage (pycro-manager's own writer) and an MJPG video through OpenCV.

Import as ``from _support.recordings import ...``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_ndtiff(folder: Path, stack: np.ndarray, *, positions: bool = True,
                 pixel_size_um: float | None = 0.33) -> Path:
    """*stack* (T, C, Y, X) as one NDTiff dataset in *folder*; each image tagged with the
    stage position pycro-manager records (x = 5 t, y = 1, z = 2 µm) unless *positions*
    is False, and the summary with *pixel_size_um* unless it is None."""
    import ndstorage  # pycromanager's own dependency: always installed with inscope

    ds = ndstorage.NDTiffDataset(str(folder), name="acq", writable=True)
    ds.initialize({"PixelSize_um": pixel_size_um} if pixel_size_um else {})
    for t in range(stack.shape[0]):
        for c in range(stack.shape[1]):
            md = {"XPosition_um": 5.0 * t, "YPosition_um": 1.0, "ZPosition_um": 2.0} \
                if positions else {}
            ds.put_image({"time": t, "channel": c}, stack[t, c], md)
    ds.finish()
    ds.close()
    return folder


def write_video(path: Path, n: int, step: int, w: int = 64, h: int = 48) -> Path:
    """An MJPG clip of *n* frames whose frame i shows a white 11 x 11 square whose centre
    is at x = 10 + step * i, y = 15."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    assert vw.isOpened()
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        cv2.rectangle(img, (5 + step * i, 10), (15 + step * i, 20), (255, 255, 255), -1)
        vw.write(img)
    vw.release()
    return path
