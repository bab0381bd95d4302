"""Readers for annotated detection data -> a list of :class:`Sample`.

Formats
-------
``npz``
    ``image`` (H, W) + ``boxes`` (N, 4) x0, y0, x1, y1 pixels (+ optional ``class_ids``
    and ``difficult`` (N,) bool),
    or a stack ``images`` (T, H, W) + ``boxes`` (N, 4) + ``frame`` (N,) saying which image
    each box belongs to (e.g. the Cell Tracking Challenge HeLa stack);
    or, without boxes, ``image`` / ``images`` + ``labels`` instance masks of the same shape
    (one integer id per object, 0 background: the slide microscope's npz), each object's
    box drawn round its mask.
``masks``
    Images with instance masks as files: a folder with ``images/`` and ``masks/`` holding
    files of the same name (StarDist's layout), or ``NAME.png`` beside ``NAME_masks.png``
    (Cellpose's; ``NAME_img.png`` too); TIFF or PNG, one box per mask id. Or the Data
    Science Bowl 2018's sample folders, ``ID/images/ID.png`` beside ``ID/masks/*.png``
    with one binary mask file per nucleus (a folder of them, or one).
``yolo``
    A folder with ``images/`` and ``labels/`` (``labels/<stem>.txt`` with one
    ``class cx cy w h`` line per box, normalised to [0, 1]), a folder where images and
    .txt files sit side by side, or an Ultralytics ``data.yaml`` (its ``val`` split for
    evaluation, ``train`` for training).
``voc``
    Pascal VOC XML files (``<object><name>``, ``<bndbox>`` xmin ymin xmax ymax,
    ``<difficult>``), the format of the Waithe et al. (2020) datasets; images found via
    ``<filename>`` next to the XML or in a sibling ``JPEGImages/`` folder.
``coco``
    A COCO JSON file (``images``, ``annotations`` with ``bbox`` [x, y, w, h],
    ``categories``); images relative to the JSON file's folder; ``iscrowd`` boxes are kept
    as *difficult* (ignored when scoring, as COCO does).

A single image file is read with its annotation from where its format keeps it: its
instance mask beside it (``NAME_masks.tif``) or in ``../masks/``, a YOLO ``NAME.txt``
beside it or in ``../labels/``, a VOC ``NAME.xml`` beside it or in ``../Annotations/``.

Box coordinates: every one of these formats counts a pixel ``k`` as the span
``[k, k + 1)`` (COCO's and YOLO's continuous coordinates, VOC's after its 1-based shift,
an npz box ``[min, max + 1)`` drawn round a mask), while frames, detections and the
simulator's truth put pixel centres at integer coordinates (pixel ``k`` spans
``[k - 0.5, k + 0.5]``, as in napari and scikit-image). The readers convert, so a
:class:`Sample`'s boxes sit on the pixels they enclose: 0.5 px less than in the file.

*Difficult* boxes (VOC's flag) are objects an evaluation should neither demand nor punish:
they do not count as ground truth to find, and a prediction on one is not a false positive.

Images come back 2-D: colour files (RGB/RGBA) are converted to gray by channel mean,
since the file format, not the microscope, made them colour.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from inscope.acquisition.frame import (
    boxes_outside,
    check_file_boxes,
    check_instance_labels,
    colour_to_grey,
    from_file_boxes,
    label_boxes,
    looks_semantic,
    open_npz,
    without_trailing_ones,
)

log = logging.getLogger(__name__)

# (OpenCV is imported where images are read: the command line imports FORMATS from here
# to build its parser, and every command would otherwise start by loading OpenCV)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
FORMATS = ("npz", "masks", "yolo", "voc", "coco")


@dataclass
class Sample:
    """One annotated image.

    Attributes
    ----------
    image
        (H, W) array, dtype as stored (uint8/uint16/float32).
    boxes
        (N, 4) float32 x0, y0, x1, y1 in pixels, pixel centres at integer coordinates:
        a box round pixels 10-19 is ``[9.5, 19.5]`` (see the module notes).
    class_ids
        (N,) int32. ``None`` -> all 0.
    name
        Where it came from (file name, or ``file[index]`` for stacks).
    class_names
        Names by class id when the format carries them.
    pixel_size_um
        Pixel size in the specimen plane when known (simulated frames), so detectors that
        rescale by a physical object size can use it.
    difficult
        (N,) bool: boxes that scoring ignores (VOC ``<difficult>``, COCO ``iscrowd``,
        objects mostly outside a simulated frame). ``None`` -> all False.
    """

    image: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray | None
    name: str
    class_names: tuple[str, ...] = field(default=())
    pixel_size_um: float | None = None
    difficult: np.ndarray | None = None

    def __post_init__(self) -> None:
        if np.ndim(self.image) != 2:
            raise ValueError(f"{self.name}: an image must be one 2-D (H, W) array; got "
                             f"shape {np.shape(self.image)}.")
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        if self.class_ids is None:
            self.class_ids = np.zeros(len(self.boxes), np.int32)
        self.class_ids = np.asarray(self.class_ids, np.int32).reshape(-1)
        if len(self.class_ids) != len(self.boxes):
            raise ValueError(f"{self.name}: {len(self.boxes)} boxes but "
                             f"{len(self.class_ids)} class ids.")
        if self.difficult is None:
            self.difficult = np.zeros(len(self.boxes), bool)
        self.difficult = np.asarray(self.difficult, bool).reshape(-1)
        if len(self.difficult) != len(self.boxes):
            raise ValueError(f"{self.name}: {len(self.boxes)} boxes but "
                             f"{len(self.difficult)} 'difficult' flags.")


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as a 2-D array (colour as
    :func:`~inscope.acquisition.frame.colour_to_grey` makes it)."""
    import cv2

    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tf:
            axes = tf.series[0].axes.upper()
            img = tf.series[0].asarray()
        _refuse_named_planes(path, axes, img.shape)
        if img.ndim == 3 and img.shape[0] in (3, 4) and img.shape[-1] not in (3, 4):
            img = np.moveaxis(img, 0, -1)
    else:
        read = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if read is None:
            raise ValueError(f"Cannot read image {path}: missing or not an image file.")
        img = read
    img = np.squeeze(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = colour_to_grey(img)
    if img.ndim != 2:
        raise ValueError(f"Image {path} has shape {img.shape}; expected one 2-D image "
                         "(a stack? save one file per frame or use an npz stack).")
    return img


#: What a TIFF's axis letters count, for the error of :func:`_refuse_named_planes`.
_TIFF_AXES = {"Z": "z planes", "C": "channels", "T": "time points", "R": "tiles",
              "V": "positions", "A": "angles", "E": "wavelengths", "P": "phases",
              "L": "exposures", "H": "lifetime bins"}


def _refuse_named_planes(path: Path, axes: str, shape: tuple[int, ...]) -> None:
    """Refuse a TIFF whose own axes (OME, ImageJ, tifffile's) name more than one z plane,
    channel, time point, ...: one 2-D image is scored against one 2-D mask.

    Why: a 3- or 4-plane z-stack or a 3-channel hyperstack has the shape of a
    channel-first colour picture, and was read as one, the mean of its planes - a
    blurred z projection, or the nuclei mixed with other stains - scored against the
    mask of one plane, without a word. Colour samples (S) and unnamed planes (Q, I)
    are left to the colour rule.
    """
    many = [(a, n) for a, n in zip(axes, shape, strict=False)
            if a not in "YXSQI" and n > 1]
    if many:
        held = ", ".join(f"{n} {_TIFF_AXES.get(a, a + ' indices')}" for a, n in many)
        raise ValueError(f"Image {path} holds {held} (axes {axes!r}, shape {tuple(shape)}); "
                         "expected one 2-D image: save the annotated plane or channel alone "
                         "(a stack: with a (T, H, W) mask stack beside it, or as an npz "
                         "'images' + 'labels').")


def boxes_from_labels(labels: np.ndarray, key: str = "labels") -> np.ndarray:
    """The (N, 4) x0, y0, x1, y1 box round each object of a 2-D instance mask, in the
    files' convention (pixel k spans [k, k + 1)), in the order of the ids; 0 is
    background (:func:`inscope.acquisition.frame.label_boxes`, checked first by
    :func:`~inscope.acquisition.frame.check_instance_labels`: one 2-D mask of
    non-negative integers; *key* names it in the error)."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"{key} must be one 2-D mask per image; got shape {lab.shape}.")
    return label_boxes(check_instance_labels(lab, key))[1]


def _mask_boxes(labels: np.ndarray, where: str, key: str) -> np.ndarray:
    """:func:`boxes_from_labels` of the mask *key* of *where*, its errors naming both."""
    try:
        return boxes_from_labels(labels, key)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _warn_if_semantic(planes: list[tuple[np.ndarray, np.ndarray]], where: str,
                      key: str) -> None:
    """One warning for the (mask, boxes) *planes* of *where* whose mask looks like a
    binary (semantic) mask - one id over several separate objects, which scores as one
    box round all of them (once per file, not once per plane of a stack)."""
    n = sum(len(b) == 1 and looks_semantic(m) for m, b in planes)
    if n:
        which = f"{n} of its {len(planes)} masks" if len(planes) > 1 else key
        log.warning("%s: %s have one id over several separate objects: a binary "
                    "(semantic) mask, not instance labels, scores as one box round all of "
                    "them; label its objects first (scipy.ndimage.label(mask > 0)[0] or "
                    "skimage.measure.label(mask > 0))", where, which)


def _label_samples(images: np.ndarray, labels: np.ndarray, name: str) -> list[Sample]:
    """Samples of an image (H, W) or stack (T, H, W) and its instance masks."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape != labels.shape or images.ndim not in (2, 3):
        raise ValueError(f"{name}: 'labels' must have the image's shape, (H, W) or (T, H, "
                         f"W); got image {images.shape}, labels {labels.shape}.")
    one = images.ndim == 2
    if one:
        images, labels = images[None], labels[None]
    names = [name if one else f"{name}[{t}]" for t in range(len(images))]
    boxes = [_mask_boxes(lab, n, "labels") for lab, n in zip(labels, names, strict=True)]
    _warn_if_semantic(list(zip(labels, boxes, strict=True)), name, "labels")
    return [Sample(img, from_file_boxes(b), None, n)
            for img, b, n in zip(images, boxes, names, strict=True)]


# -- npz -------------------------------------------------------------------------------
def _npz_pixels(a: np.ndarray, key: str, path: Path, stack: bool) -> np.ndarray:
    """An npz's ``image`` (*stack* False: (H, W), or (T, H, W) beside ``labels``) or
    ``images`` (*stack* True: (T, H, W)) as grey: colour (..., 3) / (..., 4) as
    :func:`~inscope.acquisition.frame.colour_to_grey` makes it, as for a colour PNG;
    any other shape is one line naming the key and the shapes it takes."""
    a, _ = without_trailing_ones(np.asarray(a))
    if a.dtype.kind not in "uif":
        raise ValueError(f"{path}: '{key}' holds {a.dtype} values; save the pixels as a "
                         "numeric array.")
    if a.ndim == (4 if stack else 3) and a.shape[-1] in (3, 4):
        a = colour_to_grey(a)
    want = "(T, H, W)" if stack else "(H, W)"
    if a.ndim != (3 if stack else 2):
        other = ("; one image goes under 'image'" if stack else
                 "; a stack goes under 'images' (T, H, W), with 'frame' saying which "
                 "image each box is in")
        raise ValueError(f"{path}: '{key}' has shape {np.shape(a)}; save it as {want} "
                         f"(colour as {want[:-1]}, 3)){other}.")
    if a.dtype.kind == "f" and (bad := int(a.size - np.count_nonzero(np.isfinite(a)))):
        # (the detector reads them as the image's median, as it does a live frame's:
        # objects there are missed, and their loss is the pixels', not the model's)
        log.warning("%s: '%s' has %d NaN / infinite pixels of %d; they are read as the "
                    "image's median, so objects there count as missed", path, key, bad,
                    a.size)
    return a


def _npz_boxes(d: Any, path: Path, images: np.ndarray) -> np.ndarray:
    """The npz's ``boxes`` checked (:func:`~inscope.acquisition.frame.check_file_boxes`),
    with a warning for boxes wholly outside the images, which no detection can match."""
    try:
        boxes = check_file_boxes(d["boxes"], "boxes")
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    _warn_outside(boxes, images.shape, path)
    return boxes


def _warn_outside(boxes: np.ndarray, shape: tuple[int, ...], where: str | Path,
                  names: Sequence[str] | None = None, shown: np.ndarray | None = None
                  ) -> None:
    """One warning for the file *boxes* (checked, ``[k, k + 1)`` convention) of *where*
    that lie wholly outside an image of *shape*: no detection can match them, so they
    count as missed (*names* / *shown*: the first one as the file calls and writes it)."""
    out = boxes_outside(boxes, shape)
    if out.any():
        h, w = shape[-2:]
        i = int(np.argmax(out))
        rows = boxes if shown is None else shown
        log.warning("%s: %d of %d boxes lie wholly outside the %d x %d image (the first: "
                    "%s, %s), so no detection can match them; are they in another "
                    "image's coordinates, or x and y swapped?", where, int(out.sum()),
                    len(boxes), w, h, f"row {i}" if names is None else names[i],
                    np.asarray(rows[i]).tolist())


def _npz_per_box(d: Any, key: str, path: Path, n: int) -> np.ndarray | None:
    """An optional per-box array (``class_ids``, ``difficult``, ``frame``): (n,)."""
    if key not in d.files:
        return None
    a = np.asarray(d[key])
    if a.ndim > 1 or a.size != n:
        raise ValueError(f"{path}: '{key}' needs one entry per box ({n} boxes); got shape "
                         f"{a.shape}.")
    return a.reshape(-1)


def _npz_frames(d: Any, path: Path, n_boxes: int, n_images: int) -> np.ndarray:
    """The stack npz's ``frame``: one integer index in [0, T) per box."""
    frame = _npz_per_box(d, "frame", path, n_boxes)
    assert frame is not None
    if frame.dtype.kind not in "uif" or (frame.dtype.kind == "f" and (
            not np.all(np.isfinite(frame)) or np.any(frame != np.round(frame)))):
        bad = (np.ones(len(frame), bool) if frame.dtype.kind not in "uif"
               else ~np.isfinite(frame) | (frame != np.round(frame)))
        raise ValueError(f"{path}: 'frame' has {int(bad.sum())} of {len(frame)} entries "
                         "that are not whole numbers (the first: "
                         f"{frame[np.argmax(bad)].item()!r}); give each box the integer index of "
                         f"its image in 'images' (0..{n_images - 1}).")
    frame = frame.astype(np.int64)
    bad = (frame < 0) | (frame >= n_images)
    if bad.any():
        raise ValueError(f"{path}: 'frame' has {int(bad.sum())} of {len(frame)} entries "
                         f"outside 0..{n_images - 1} (the first: {frame[np.argmax(bad)]}), "
                         f"but 'images' holds {n_images} images; give each box the index "
                         "of its image (0-based).")
    return frame


def read_npz(path: str | Path) -> list[Sample]:
    """Single image (``image`` + ``boxes``), stack (``images`` + ``boxes`` + ``frame``),
    or either with ``labels`` (instance masks) instead of boxes; colour images as grey
    (see the module notes). Malformed boxes, labels or frame indices are one line
    naming the key and the fix; boxes wholly outside the image are a warning."""
    path = Path(path)
    with open_npz(path) as d:
        keys = set(d.files)
        if "boxes" not in keys and "labels" in keys:
            labels, _ = without_trailing_ones(np.asarray(d["labels"]))
            for key in ("image", "images"):
                if key in keys:
                    pixels = d[key]
                    if key == "image" and labels.ndim == 3 and np.ndim(
                            without_trailing_ones(np.asarray(pixels))[0]) == 2:
                        raise ValueError(
                            f"{path}: 'labels' has shape {labels.shape}, a stack, but "
                            f"'image' has shape {np.shape(pixels)}, one image; save the "
                            "labels of one image as (H, W), or the stack's images as "
                            "'images' (T, H, W).")
                    img = _npz_pixels(pixels, key, path,
                                      stack=key == "images" or labels.ndim == 3)
                    return _label_samples(img, labels, path.name)
        if "image" in keys and "boxes" in keys:
            img = _npz_pixels(d["image"], "image", path, stack=False)
            boxes = _npz_boxes(d, path, img)
            return [Sample(img, from_file_boxes(boxes),
                           _npz_per_box(d, "class_ids", path, len(boxes)), path.name,
                           difficult=_npz_per_box(d, "difficult", path, len(boxes)))]
        if "images" in keys and "boxes" in keys and "frame" in keys:
            images = _npz_pixels(d["images"], "images", path, stack=True)
            boxes = _npz_boxes(d, path, images)
            frame = _npz_frames(d, path, len(boxes), len(images))
            cls = _npz_per_box(d, "class_ids", path, len(boxes))
            hard = _npz_per_box(d, "difficult", path, len(boxes))
            boxes = from_file_boxes(boxes)
            out = []
            for t in range(len(images)):
                m = frame == t
                out.append(Sample(images[t], boxes[m], None if cls is None else cls[m],
                                  f"{path.name}[{t}]",
                                  difficult=None if hard is None else hard[m]))
            return out
    have = [k for k in ("image", "images") if k in keys]
    if have and "boxes" not in keys:
        why = (f"has '{have[0]}' but neither 'boxes' (N, 4) nor 'labels' (instance masks) "
               "to score against")
    elif have == ["images"]:
        why = "has 'images' and 'boxes' but no 'frame' (N,) saying which image each box is in"
    else:
        why = "has no 'image' or 'images'"
    raise ValueError(
        f"{path}: {why}; an npz dataset needs 'image' + 'boxes', 'images' + 'boxes' + "
        f"'frame', or 'image' / 'images' + 'labels' (instance masks); found keys "
        f"{sorted(keys)}.")


# -- image + instance-mask files -------------------------------------------------------
#: suffixes that mark a mask file beside its image (Cellpose: NAME_masks.png beside
#: NAME.png or NAME_img.png, and NAME_cp_masks.png as its GUI and command line save
#: them; the longer tag first)
_MASK_TAGS = ("_cp_masks", "_masks", "_mask")


def _mask_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) files of a masks dataset (see the module notes)."""
    def files(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file()
                      and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))

    if (root / "images").is_dir() and (root / "masks").is_dir():
        masks = {p.stem: p for p in files(root / "masks")}
        images = files(root / "images")
        out = [(p, masks[p.stem]) for p in images if p.stem in masks]
        _warn_unmasked(root, [p for p in images if p.stem not in masks], len(out),
                       "masks/ holds no file of its name")
        return out
    out = []
    all_files = files(root)
    by_stem = {p.stem: p for p in all_files}
    for m in all_files:
        for tag in _MASK_TAGS:
            if m.stem.endswith(tag):
                base = m.stem[: -len(tag)]
                img = by_stem.get(base) or by_stem.get(base + "_img")
                if img is not None:
                    out.append((img, m))
                break
    if out:
        used = {p for pair in out for p in pair}
        # (Cellpose's other outputs beside them are no images to score)
        _warn_unmasked(root, [p for p in all_files if p not in used and not p.stem.endswith(
            (*_MASK_TAGS, "_flows", "_outlines"))], len(out), "no NAME_masks file beside it")
    return out


def _warn_unmasked(root: Path, images: list[Path], n_scored: int, why: str) -> None:
    """One warning for the *images* of a masks dataset that have no mask: they are not
    scored, and the figures said nothing of the images left out."""
    if images:
        log.warning("%s: %d image(s) have no mask and are left out, %d scored (the first: "
                    "%s, %s); add their masks, or move them out of the dataset.", root,
                    len(images), n_scored, images[0].name, why)


def _dsb_samples(root: Path) -> list[Path]:
    """The sample folders of a Data Science Bowl 2018 layout under *root* (*root* itself
    when it is one): ``ID/images/ID.png`` beside ``ID/masks/*.png``, one binary mask
    file per nucleus, whose names are not the image's."""
    def is_sample(d: Path) -> bool:
        imgs = [q for q in (d / "images").glob("*") if q.suffix.lower() in IMAGE_SUFFIXES]
        masks = [q for q in (d / "masks").glob("*") if q.suffix.lower() in IMAGE_SUFFIXES]
        return (len(imgs) == 1 and bool(masks)
                and all(m.stem != imgs[0].stem for m in masks))

    if (root / "images").is_dir():
        return [root] if (root / "masks").is_dir() and is_sample(root) else []
    return sorted(d for d in root.iterdir() if d.is_dir() and (d / "images").is_dir()
                  and (d / "masks").is_dir() and is_sample(d))


def _read_mask_file(path: Path) -> np.ndarray | None:
    import cv2
    import tifffile

    if path.suffix.lower() in (".tif", ".tiff"):
        return np.squeeze(tifffile.imread(path))
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def read_dsb_sample(folder: Path) -> Sample:
    """One Data Science Bowl 2018 sample folder: its image and one box round the
    non-zero pixels of each file in ``masks/`` (one nucleus each)."""
    img_path = next(q for q in sorted((folder / "images").glob("*"))
                    if q.suffix.lower() in IMAGE_SUFFIXES)
    img = read_image(img_path)
    rows = []
    for m in sorted((folder / "masks").glob("*")):
        if m.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask = _read_mask_file(m)
        if mask is not None and mask.ndim == 3:
            mask = mask.max(axis=-1)  # a binary mask saved as colour
        if mask is None or mask.shape != img.shape:
            raise ValueError(f"{m}: each mask must be one image of the image's shape "
                             f"{img.shape}; got "
                             f"{'nothing readable' if mask is None else mask.shape}.")
        ys, xs = np.nonzero(mask)
        if len(xs):
            rows.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    boxes = np.asarray(rows, np.float64).reshape(-1, 4)
    return Sample(img, from_file_boxes(boxes), None, f"{folder.name}/{img_path.name}")


def read_masks(root: str | Path) -> list[Sample]:
    """Images with instance-mask files (StarDist's images/ + masks/, Cellpose's
    NAME_masks beside NAME): one box per mask id; or the Data Science Bowl 2018's
    sample folders (one binary mask file per nucleus, :func:`read_dsb_sample`)."""
    root = Path(root)
    pairs = _mask_pairs(root)
    if not pairs:
        dsb = _dsb_samples(root)
        if dsb:
            return [read_dsb_sample(d) for d in dsb]
        raise ValueError(f"{root}: no image with a mask found; expected images/ and masks/ "
                         "folders holding files of the same name, NAME_masks.png beside "
                         "NAME.png, or Data Science Bowl sample folders (ID/images/ID.png "
                         "and ID/masks/*.png, one file per nucleus).")
    return _mask_samples(pairs)


def _mask_samples(pairs: list[tuple[Path, Path]]) -> list[Sample]:
    """Samples of (image, instance-mask file) pairs: one per pair, or one per plane when
    a TIFF stack (T, H, W) has a mask stack of its shape beside it - the mask's planes
    say the image's are separate images (tifffile stores a plain 3- or 4-plane array as
    one RGB(A) image, which :func:`read_image` would average)."""
    import tifffile

    out: list[Sample] = []
    for img_path, mask_path in pairs:
        mask = _read_mask_file(mask_path)
        is_tiff = img_path.suffix.lower() in (".tif", ".tiff")
        if mask is not None and mask.ndim == 3 and is_tiff:
            stack = np.squeeze(tifffile.imread(img_path))
            if stack.shape == mask.shape:
                out.extend(_label_samples(stack, mask, img_path.name))
                continue
        img = read_image(img_path)
        if mask is None or mask.shape != img.shape:
            stored = (np.squeeze(tifffile.imread(img_path)).shape if is_tiff
                      else img.shape)
            how = (f" ({img_path.name} holds {stored}, read as one colour image)"
                   if stored != img.shape else "")
            raise ValueError(f"{mask_path}: the mask must be one grey image of the image's "
                             f"shape {img.shape}{how}, or a (T, H, W) mask stack beside a "
                             "(T, H, W) TIFF stack; got "
                             f"{'nothing readable' if mask is None else mask.shape}.")
        boxes = _mask_boxes(mask, str(mask_path), "labels")
        _warn_if_semantic([(mask, boxes)], str(mask_path), "labels")
        out.append(Sample(img, from_file_boxes(boxes), None, img_path.name))
    return out


# -- YOLO ------------------------------------------------------------------------------
def _yolo_pairs(root: Path) -> list[tuple[Path, Path | None]]:
    img_dir = root / "images" if (root / "images").is_dir() else root
    lab_dir = root / "labels" if (root / "labels").is_dir() else img_dir
    images = sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = []
    for p in images:
        rel = p.relative_to(img_dir).with_suffix(".txt")
        lab = lab_dir / rel
        pairs.append((p, lab if lab.exists() else None))
    return pairs


def read_yolo(root: str | Path) -> list[Sample]:
    """YOLO txt labels: ``class cx cy w h`` normalised; an image without .txt has no box."""
    root = Path(root)
    pairs = _yolo_pairs(root)
    if not pairs:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found for a "
                         "YOLO dataset; expected images/ and labels/ folders.")
    return _yolo_samples(pairs, _class_names(root / "classes.txt",
                                             root / "labels" / "classes.txt"))


def _class_names(*files: Path) -> tuple[str, ...]:
    """YOLO class names, one per line, from the last of *files* that exists (``()`` when
    none does)."""
    names: tuple[str, ...] = ()
    for f in files:
        if f.exists():
            names = tuple(s.strip() for s in f.read_text().splitlines() if s.strip())
    return names


def _yolo_rows(lab: Path) -> tuple[np.ndarray, list[str]]:
    """``(rows, names)``: the (N, 5) ``class cx cy w h`` lines of the YOLO label file
    *lab* and their line numbers (``"line 3"``), an Ultralytics segment line (``class
    x1 y1 x2 y2 ...``, 3 or more points) as the box round its points, as Ultralytics
    reads it for detection.

    Why: a segment line read as ``class cx cy w h`` took its first point for the centre
    and the second for the size, a wrong box for every nucleus and a silent AP of 0.
    """
    rows: list[list[float]] = []
    names: list[str] = []
    for k, line in enumerate(lab.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            v = [float(t) for t in line.split()]
        except ValueError:
            raise ValueError(f"{lab}: line {k} is not numbers ({line.strip()[:40]!r}); "
                             "each line must be 'class cx cy w h' with values normalised "
                             "to [0, 1].") from None
        if len(v) >= 7 and len(v) % 2:
            xs, ys = v[1::2], v[2::2]
            v = [v[0], (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2,
                 max(xs) - min(xs), max(ys) - min(ys)]
        elif len(v) != 5:
            raise ValueError(f"{lab}: line {k} has {len(v)} numbers; each line needs 5, "
                             "'class cx cy w h' (or an Ultralytics segment 'class x1 y1 x2 "
                             "y2 ...' of 3 or more points), normalised to [0, 1].")
        rows.append(v)
        names.append(f"line {k}")
    return np.asarray(rows, np.float64).reshape(-1, 5), names


def _check_yolo_rows(rows: np.ndarray, names: list[str], lab: Path, w: int, h: int
                     ) -> None:
    """Refuse YOLO lines no detection can match, in one line naming the first: NaN,
    a class that is not a whole number >= 0, a size <= 0
    (:func:`~inscope.acquisition.frame.check_file_boxes`), coordinates outside [0, 1] -
    most often pixels written where YOLO wants fractions of the image's size, which
    scored as boxes far outside the image, a silent AP of 0."""
    cx, cy, bw, bh = rows[:, 1:].T
    try:
        check_file_boxes(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1),
                         "YOLO boxes", shown=rows, names=names,
                         fix="each line is 'class cx cy w h', w and h > 0")
    except ValueError as e:
        raise ValueError(f"{lab}: {e}") from None
    bad = (rows[:, 0] < 0) | (rows[:, 0] != np.round(rows[:, 0]))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{lab}: {names[i]} has class {rows[i, 0]:g}; the first number of "
                         "each line is a class index, a whole number >= 0 (0 for nuclei).")
    bad = (rows[:, 1:] > 1).any(axis=1) | (rows[:, 1:] < 0).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        px = " (they look like pixels)" if (rows[:, 1:] > 1).any() else ""
        raise ValueError(f"{lab}: {int(bad.sum())} of {len(rows)} lines have coordinates "
                         f"outside [0, 1]{px} (the first: {names[i]}, {rows[i].tolist()}); "
                         "YOLO's cx cy w h are fractions of the image's size: divide cx "
                         f"and w by its width ({w}), cy and h by its height ({h}).")


def _yolo_samples(pairs: list[tuple[Path, Path | None]], names: tuple[str, ...]
                  ) -> list[Sample]:
    out = []
    for img_path, lab in pairs:
        img = read_image(img_path)
        h, w = img.shape
        rows = np.zeros((0, 5))
        if lab is not None and lab.stat().st_size:
            rows, where = _yolo_rows(lab)
            _check_yolo_rows(rows, where, lab, w, h)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        out.append(Sample(img, from_file_boxes(boxes), rows[:, 0].astype(np.int32),
                          img_path.name, names))
    return out


def _label_of(image: Path) -> Path:
    """Ultralytics' rule: the label of ``.../images/a/b.png`` is ``.../labels/a/b.txt``
    (the last ``images`` folder becomes ``labels``); else a .txt beside the image."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_yolo_yaml(path: str | Path, split: str | None = None) -> list[Sample]:
    """An Ultralytics ``data.yaml``: ``path`` (root, default the file's folder), ``train`` /
    ``val`` / ``test`` (a folder, a .txt list of images, or a list of either, relative to
    the root) and ``names`` (a list, or a ``{id: name}`` mapping).

    *split* picks the entry (default: ``val`` if present, else ``test``, else ``train``).
    """
    import yaml

    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e}).") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: an Ultralytics data.yaml is a mapping with 'train'/'val' "
                         "and 'names' keys.")
    root = Path(str(d.get("path") or "."))
    if not root.is_absolute():
        root = path.parent / root
    if split is None:
        split = next((k for k in ("val", "test", "train") if d.get(k)), None)
    if not split or not d.get(split):
        have = [k for k in ("train", "val", "test") if d.get(k)]
        raise ValueError(f"{path}: no {split or 'train/val/test'!r} entry (found {have}); "
                         "add one naming an image folder or a .txt list of images.")
    names_raw = d.get("names") or []
    if isinstance(names_raw, dict):
        names = tuple(str(names_raw[k]) for k in sorted(names_raw, key=int))
    else:
        names = tuple(str(n) for n in names_raw)
    entries = d[split] if isinstance(d[split], list) else [d[split]]
    images: list[Path] = []
    for entry in entries:
        p = Path(str(entry))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            images.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES))
        elif p.suffix.lower() == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    images.append(q if q.is_absolute() else root / q)
        elif p.is_file():
            images.append(p)
        else:
            raise ValueError(f"{path}: {split} entry {str(entry)!r} does not exist (looked for "
                             f"{p}); paths are relative to 'path' ({root}).")
    if not images:
        raise ValueError(f"{path}: the {split!r} entry holds no images "
                         f"({', '.join(IMAGE_SUFFIXES)}).")
    pairs = [(q, lab if (lab := _label_of(q)).exists() else None) for q in images]
    return _yolo_samples(pairs, names)


# -- Pascal VOC ------------------------------------------------------------------------
def _voc_coord(bndbox: ET.Element, key: str, xml_path: Path) -> float:
    """One ``<bndbox>`` coordinate; a missing one is an error naming the file."""
    text = bndbox.findtext(key)
    if text is None:
        raise ValueError(f"{xml_path}: a <bndbox> has no <{key}>; every box needs xmin, "
                         "ymin, xmax and ymax.")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{xml_path}: a <bndbox>'s <{key}> is {text.strip()[:40]!r}, not "
                         "a number; write pixel coordinates (1-based, e.g. <xmin>12</xmin>)."
                         ) from None


def read_voc(paths: Iterable[str | Path], class_names: Sequence[str] | None = None
             ) -> list[Sample]:
    """Pascal VOC XML annotation files; class ids follow *class_names* or first seen."""
    names: list[str] = list(class_names or [])
    out = []
    for xml_path in map(Path, paths):
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as e:
            raise ValueError(f"{xml_path}: not valid XML ({e}).") from None
        fname = root.findtext("filename") or xml_path.with_suffix(".png").name
        cands = [xml_path.parent / fname, xml_path.parent.parent / "JPEGImages" / fname,
                 *[xml_path.with_suffix(s) for s in IMAGE_SUFFIXES]]
        img_path = next((c for c in cands if c.exists()), None)
        if img_path is None:
            raise ValueError(f"{xml_path}: image {fname!r} not found next to the XML or in "
                             "../JPEGImages/.")
        boxes, cls, hard, raw = [], [], [], []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "object").strip()
            bb = obj.find("bndbox")
            if bb is None:
                continue
            if name not in names:
                names.append(name)
            # VOC pixel indices are 1-based and inclusive: [xmin-1, xmax) in 0-based
            # exclusive coordinates.
            x0, y0, x1, y1 = (_voc_coord(bb, k, xml_path) for k in ("xmin", "ymin", "xmax",
                                                                    "ymax"))
            boxes.append([x0 - 1, y0 - 1, x1, y1])
            raw.append([x0, y0, x1, y1])
            cls.append(names.index(name))
            hard.append((obj.findtext("difficult") or "0").strip() in ("1", "true"))
        # the npz's checks (xmax < xmin, NaN: a silent AP of 0 before), in the file's
        # own numbers, objects counted from 1 as in the XML
        which = [f"object {k}" for k in range(1, len(boxes) + 1)]
        try:
            file_boxes = check_file_boxes(
                np.asarray(boxes, np.float64).reshape(-1, 4), "<bndbox>",
                shown=np.asarray(raw).reshape(-1, 4), names=which,
                fix="VOC boxes need xmin <= xmax and ymin <= ymax (1-based, inclusive); "
                    "swap the corners")
        except ValueError as e:
            raise ValueError(f"{xml_path}: {e}") from None
        img = read_image(img_path)
        _warn_outside(file_boxes, img.shape, xml_path, which, np.asarray(raw).reshape(-1, 4))
        out.append(Sample(img, from_file_boxes(file_boxes),
                          np.asarray(cls, np.int32), img_path.name, (),
                          difficult=np.asarray(hard, bool)))
    for s in out:
        s.class_names = tuple(names)
    return out


# -- COCO ------------------------------------------------------------------------------
def read_coco(path: str | Path) -> list[Sample]:
    """COCO detection JSON; ``iscrowd`` boxes are kept as difficult; class ids dense 0..K-1."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from None
    if not {"images", "annotations"} <= set(d):
        raise ValueError(f"{path}: a COCO file needs 'images' and 'annotations'; found "
                         f"{sorted(d)}.")
    cats = sorted(d.get("categories", []), key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    names = tuple(c.get("name", str(c["id"])) for c in cats)
    by_img: dict[int, list[dict]] = {}
    for a in d["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    orphans = set(by_img) - {im["id"] for im in d["images"]}
    if orphans:
        log.warning("%s: %d annotations name image ids missing from 'images' (the first: "
                    "%s), so they are not scored; add those images or remove them.", path,
                    sum(len(by_img[i]) for i in orphans), sorted(orphans, key=str)[0])
    out = []
    for im in d["images"]:
        anns = by_img.get(im["id"], [])
        b = np.asarray([_coco_bbox(a, path) for a in anns], np.float64).reshape(-1, 4)
        which = [f"annotation id {a.get('id', '?')}" for a in anns]
        try:
            boxes = check_file_boxes(
                np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1), "'bbox'",
                shown=b, names=which,
                fix="COCO boxes are [x, y, width, height], width and height > 0")
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        cls = [cat_index.setdefault(a.get("category_id", 0), len(cat_index)) for a in anns]
        img = read_image(_coco_image(im, path))
        size = (im.get("height"), im.get("width"))
        if None not in size and tuple(size) != img.shape:
            log.warning("%s: image %r is %d x %d but the JSON says %s x %s (width x height): "
                        "boxes drawn on the other size are scored on this one; give the "
                        "annotated image, or fix 'width' / 'height'.", path, im["file_name"],
                        img.shape[1], img.shape[0], size[1], size[0])
        _warn_outside(boxes, img.shape, f"{path} ({im['file_name']})", which, b)
        out.append(Sample(img, from_file_boxes(boxes),
                          np.asarray(cls, np.int32), im["file_name"], names,
                          difficult=np.asarray([bool(a.get("iscrowd", 0)) for a in anns],
                                               bool)))
    return out


def _coco_bbox(ann: dict, path: Path) -> list:
    """The ``[x, y, w, h]`` of one COCO annotation: its ``bbox``, else the box round its
    ``segmentation`` (polygons, or uncompressed RLE), as COCO's tools derive it.

    Why: annotations exported from a segmentation tool often carry only the outline,
    and reading ``bbox`` was a ``KeyError`` traceback.
    """
    if ann.get("bbox") is not None:
        bbox = ann["bbox"]
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            raise ValueError(f"{path}: annotation id {ann.get('id', '?')} has 'bbox' "
                             f"{str(bbox)[:60]}; a COCO box is 4 numbers [x, y, width, "
                             "height].")
        return [np.nan if v is None else v for v in bbox]
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg and all(isinstance(p, list) and len(p) >= 2
                                             for p in seg):
        xy = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in seg])
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        return [x0, y0, x1 - x0, y1 - y0]
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list) and seg.get("size"):
        # uncompressed RLE: alternating background / object runs down the columns
        h = int(seg["size"][0])
        ends = np.cumsum(seg["counts"])
        starts = np.concatenate([[0], ends[:-1]])
        on = [(s, e) for s, e in zip(starts[1::2], ends[1::2], strict=True) if e > s]
        if on:
            idx = np.concatenate([np.arange(s, e) for s, e in on])
            ys, xs = idx % h, idx // h
            return [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    raise ValueError(f"{path}: annotation id {ann.get('id', '?')} has no 'bbox' [x, y, "
                     "width, height] and no polygon or uncompressed-RLE 'segmentation' to "
                     "take one from; add its 'bbox'.")


def _coco_image(im: dict, path: Path) -> Path:
    """The file of the COCO image entry *im*: its ``file_name`` relative to the JSON's
    folder or its ``images/``, else the same name without its folders there (exports
    keep the folders of the machine that made them); one line naming every place
    looked when none exists."""
    name = str(im.get("file_name", ""))
    cands = [path.parent / name, path.parent / "images" / name]
    bare = PureWindowsPath(name).name  # (splits on / and \ alike: exports from Windows)
    if bare != name:
        cands += [path.parent / bare, path.parent / "images" / bare]
    hit = next((c for c in cands if c.is_file()), None)
    if hit is None:
        raise ValueError(f"{path}: image {name!r} (id {im.get('id')}) not found (looked "
                         f"for {', '.join(map(str, dict.fromkeys(cands)))}); 'file_name' is "
                         "relative to the JSON's folder: move the image there or fix the "
                         "name.")
    return hit


# -- one image file --------------------------------------------------------------------
def _annotation_of(img: Path) -> tuple[str, Path]:
    """``(format, file)``: the annotation of the single image file *img*, where each
    format keeps it - an instance mask ``NAME_masks.*`` / ``NAME_mask.*`` beside it or
    ``../masks/NAME.*`` (Cellpose's and StarDist's layouts), YOLO ``NAME.txt`` beside it
    or in ``../labels/``, Pascal VOC ``NAME.xml`` beside it or in ``../Annotations/``;
    raise naming every place looked when there is none."""
    stem, here, up = img.stem, img.parent, img.parent.parent
    looked: list[Path] = []

    def first(fmt: str, cands: list[Path]) -> tuple[str, Path] | None:
        looked.extend(cands)
        hit = next((c for c in cands if c.is_file() and c != img), None)
        return (fmt, hit) if hit is not None else None

    masks = [here / f"{stem}{tag}{suf}" for tag in _MASK_TAGS for suf in IMAGE_SUFFIXES]
    if img.parent.name == "images":
        masks += [up / "masks" / f"{stem}{suf}" for suf in IMAGE_SUFFIXES]
    got = (first("masks", masks)
           or first("yolo", [here / f"{stem}.txt", up / "labels" / f"{stem}.txt"])
           or first("voc", [here / f"{stem}.xml", up / "Annotations" / f"{stem}.xml"]))
    if got is None:
        names = ", ".join(str(c.relative_to(up) if c.is_relative_to(up) else c)
                          for c in looked if c.suffix in (".tif", ".png", ".txt", ".xml"))
        raise ValueError(
            f"{img}: no annotation found for this image (looked for {names}). Put its "
            f"instance mask beside it as {stem}_masks.tif (or .png), or pass the dataset's "
            "folder or annotation file instead.")
    return got


def read_image_file(path: str | Path) -> list[Sample]:
    """One image file and its annotation, found where its format keeps it
    (:func:`_annotation_of`): ``inscope eval cell.tif`` with ``cell_masks.tif`` beside."""
    img = Path(path)
    fmt, ann = _annotation_of(img)
    if fmt == "masks":
        return _mask_samples([(img, ann)])
    if fmt == "yolo":
        return _yolo_samples([(img, ann)], _class_names(ann.parent / "classes.txt"))
    return read_voc([ann])


# -- auto ------------------------------------------------------------------------------
def detect_format(path: str | Path) -> str:
    """Guess the format of *path* (a file or folder); raise naming the choices."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Dataset path {p} does not exist.")
    if p.is_file():
        suf = p.suffix.lower()
        if suf == ".npz":
            return "npz"
        if suf == ".xml":
            return "voc"
        if suf == ".json":
            return "coco"
        if suf in (".yaml", ".yml"):
            return "yolo"  # an Ultralytics data.yaml
        if suf in IMAGE_SUFFIXES:
            return _annotation_of(p)[0]  # one image, its annotation beside it
    else:
        if any(p.glob("*.npz")) and not any(p.glob("*.xml")):
            return "npz"
        if ((p / "images").is_dir() and (p / "masks").is_dir()) or any(
                q.stem.endswith(_MASK_TAGS) and q.suffix.lower() in IMAGE_SUFFIXES
                for q in p.glob("*")) or _dsb_samples(p):
            return "masks"
        if any(p.glob("*.json")) and not any(p.rglob("*.txt")):
            return "coco"
        if any(p.rglob("*.xml")):
            return "voc"
        if (p / "labels").is_dir() or any(p.rglob("*.txt")):
            return "yolo"
        if any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.rglob("*")):
            return "yolo"  # images with no labels at all: read, and reported as unlabelled
    raise ValueError(
        f"Cannot tell the dataset format of {p}. Use an .npz file, a COCO .json, Pascal VOC "
        ".xml files (or a folder of them), a YOLO folder (images/ + labels/) or images with "
        "instance masks (images/ + masks/, or NAME_masks.png beside NAME.png); or name "
        f"the format explicitly (fmt= one of {list(FORMATS)}).")


def load_dataset(paths: str | Path | Sequence[str | Path], fmt: str = "auto",
                 split: str | None = None) -> list[Sample]:
    """Read one or more datasets into a list of :class:`Sample`.

    Parameters
    ----------
    paths
        File(s) or folder(s). A folder of npz / VOC / COCO files reads them all.
    fmt
        ``"auto"`` (per path, see :func:`detect_format`) or one of ``npz``, ``masks``,
        ``yolo``, ``voc``, ``coco``.
    split
        For an Ultralytics ``data.yaml``: which entry to read (``train``, ``val``,
        ``test``; default ``val``, else ``test``, else ``train``).
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"Unknown dataset format {fmt!r}; use 'auto' or one of "
                         f"{list(FORMATS)}.")
    out: list[Sample] = []
    for path in map(Path, paths):
        if fmt != "npz" and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            # one image: its annotation is looked up once, here (not by detect_format too)
            out.extend(read_image_file(path))
            continue
        f = detect_format(path) if fmt == "auto" else fmt
        if f == "npz":
            files = [path] if path.is_file() else sorted(path.glob("*.npz"))
            for x in files:
                out.extend(read_npz(x))
        elif f == "masks":
            out.extend(read_masks(path))
        elif f == "yolo" and path.suffix.lower() in (".yaml", ".yml"):
            out.extend(read_yolo_yaml(path, split))
        elif f == "yolo":
            out.extend(read_yolo(path))
        elif f == "voc":
            files = [path] if path.is_file() else sorted(path.rglob("*.xml"))
            out.extend(read_voc(files))
        elif f == "coco":
            files = [path] if path.is_file() else sorted(path.glob("*.json"))
            for x in files:
                out.extend(read_coco(x))
    if not out:
        raise ValueError(f"No annotated images found in {[str(p) for p in paths]}.")
    return out


# -- simulated held-out frames ---------------------------------------------------------
#: Seeds at or above this are never used for training (training uses seeds < 100000).
HELD_OUT_SEED = 900000


#: Simulated objects with less than this fraction of their box in the frame are marked
#: difficult: a sliver of a nucleus at the edge is not something a detector (or an
#: annotator) can be asked to find, nor punished for.
MIN_VISIBLE_FRACTION = 0.25


def simulated_samples(n: int, seed: int = HELD_OUT_SEED, *, span_um: float | None = None,
                      min_visible: float = MIN_VISIBLE_FRACTION, **sim_options
                      ) -> list[Sample]:
    """Snap *n* annotated frames from the simulated microscope at random stage positions.

    Parameters
    ----------
    n
        Number of frames.
    seed
        Specimen and position seed; keep it >= :data:`HELD_OUT_SEED` for evaluation so no
        frame was seen in training.
    span_um
        Positions are drawn uniformly in ``[-span_um, span_um]`` (clipped to the stage's
        soft limits); default 1000 µm: inside the default slide and maximum step.
    min_visible
        Objects with less of their box in view are flagged ``difficult``.
    **sim_options
        Extra :class:`inscope.acquisition.simulated.SimConfig` fields.
    """
    try:
        from inscope.acquisition.simulated import SimConfig, SimulatedMicroscope
    except ImportError as e:
        raise RuntimeError(f"The simulated microscope is not available ({e}); evaluate on "
                           "files instead.") from None
    rng = np.random.default_rng(seed)
    scope = SimulatedMicroscope(SimConfig(seed=seed, **sim_options), realtime=False)
    try:
        span = 1000.0 if span_um is None else float(span_um)
        lim = scope.limits
        lo = np.array([-span, -span])
        hi = np.array([span, span])
        for k, ax in enumerate(("x", "y")):
            r = getattr(lim, ax, None) if lim is not None else None
            if r is not None:
                lo[k], hi[k] = max(lo[k], r[0]), min(hi[k], r[1])
        out = []
        for i in range(int(n)):
            x, y = rng.uniform(lo, hi)
            scope.move_xy(float(x), float(y))
            f = scope.snap()
            truth = f.truth if f.truth is not None else np.zeros((0, 4), np.float32)
            vis = np.asarray(f.metadata.get("truth_visible_fraction", np.ones(len(truth))))
            out.append(Sample(f.pixels, truth, None, f"sim{seed}[{i}]@({x:.0f},{y:.0f})",
                              pixel_size_um=float(f.pixel_size_um),
                              difficult=vis < min_visible))
        return out
    finally:
        scope.close()
