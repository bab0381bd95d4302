"""Dataset readers on tiny datasets of each format written to tmp_path."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile

from inscope.detector.datasets import detect_format, load_dataset, read_image

BOXES = np.array([[10, 20, 30, 36], [40, 8, 60, 30]], np.float32)  # x0 y0 x1 y1
#: the same boxes as a Sample holds them: the files count pixel k as [k, k + 1), frames put
#: pixel centres at integers (a box round pixels 10-29 is [9.5, 29.5])
IN_FRAME = BOXES - 0.5
H, W = 48, 80


def image(seed=0, dtype=np.uint16):
    return np.random.default_rng(seed).integers(0, 255, (H, W)).astype(dtype)


def test_npz_single_and_stack(tmp_path):
    np.savez(tmp_path / "one.npz", image=image(), boxes=BOXES)
    s = load_dataset(tmp_path / "one.npz")
    assert len(s) == 1 and s[0].image.shape == (H, W)
    assert np.array_equal(s[0].boxes, IN_FRAME) and s[0].class_ids.tolist() == [0, 0]
    imgs = np.stack([image(1), image(2), image(3)])
    frame = np.array([0, 2, 2])
    boxes = np.array([BOXES[0], BOXES[0], BOXES[1]], np.int32)
    np.savez(tmp_path / "stack.npz", images=imgs, boxes=boxes, frame=frame,
             difficult=np.array([0, 1, 0], bool))
    s = load_dataset(tmp_path / "stack.npz")
    assert [len(x.boxes) for x in s] == [1, 0, 2]
    assert [x.difficult.tolist() for x in s] == [[False], [], [True, False]]
    assert np.array_equal(s[2].image, imgs[2]) and s[2].name == "stack.npz[2]"
    assert s[0].boxes.dtype == np.float32


def test_npz_with_wrong_keys(tmp_path):
    np.savez(tmp_path / "bad.npz", pixels=image())
    with pytest.raises(ValueError, match="'image' \\+ 'boxes'"):
        load_dataset(tmp_path / "bad.npz")


def test_yolo(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), image(dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), image(1, dtype=np.uint8))
    lines = []
    for c, (x0, y0, x1, y1) in zip([0, 1], BOXES, strict=True):
        lines.append(f"{c} {(x0 + x1) / 2 / W} {(y0 + y1) / 2 / H} {(x1 - x0) / W} "
                     f"{(y1 - y0) / H}")
    (tmp_path / "labels" / "a.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("nucleus\nmitosis\n")
    assert detect_format(tmp_path) == "yolo"
    s = load_dataset(tmp_path)
    assert [x.name for x in s] == ["a.png", "b.png"]
    assert np.allclose(s[0].boxes, IN_FRAME, atol=1e-3)
    assert s[0].class_ids.tolist() == [0, 1] and len(s[1].boxes) == 0
    assert s[0].class_names == ("nucleus", "mitosis")


def test_yolo_bad_label(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), image(dtype=np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(ValueError, match="class cx cy w h"):
        load_dataset(tmp_path)


def test_voc_colour_image(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 1] = 90
    cv2.imwrite(str(tmp_path / "JPEGImages" / "f.png"), rgb)
    objs = "".join(
        f"<object><name>cell</name><difficult>{int(k == 1)}</difficult>"
        f"<bndbox><xmin>{x0 + 1:g}</xmin><ymin>{y0 + 1:g}</ymin>"
        f"<xmax>{x1:g}</xmax><ymax>{y1:g}</ymax></bndbox></object>"
        for k, (x0, y0, x1, y1) in enumerate(BOXES))
    (tmp_path / "Annotations" / "f.xml").write_text(
        f"<annotation><filename>f.png</filename><size><width>{W}</width>"
        f"<height>{H}</height></size>{objs}</annotation>")
    assert detect_format(tmp_path) == "voc"
    s = load_dataset(tmp_path)
    assert len(s) == 1 and s[0].image.shape == (H, W) and s[0].image.dtype == np.uint8
    assert s[0].image.max() == 30  # gray = channel mean of (0, 90, 0)
    assert np.array_equal(s[0].boxes, IN_FRAME) and s[0].class_names == ("cell",)
    assert s[0].difficult.tolist() == [k == 1 for k in range(len(BOXES))]


def test_coco(tmp_path):
    tifffile.imwrite(tmp_path / "x.tif", image())
    b = BOXES
    d = {"images": [{"id": 7, "file_name": "x.tif", "width": W, "height": H}],
         "annotations": [
             {"id": 1, "image_id": 7, "category_id": 3,
              "bbox": [float(b[0, 0]), float(b[0, 1]), float(b[0, 2] - b[0, 0]),
                       float(b[0, 3] - b[0, 1])]},
             {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 1, "bbox": [0, 0, 5, 5]},
             {"id": 3, "image_id": 7, "category_id": 5,
              "bbox": [float(b[1, 0]), float(b[1, 1]), float(b[1, 2] - b[1, 0]),
                       float(b[1, 3] - b[1, 1])]}],
         "categories": [{"id": 3, "name": "nucleus"}, {"id": 5, "name": "mitosis"}]}
    (tmp_path / "ann.json").write_text(json.dumps(d))
    s = load_dataset(tmp_path / "ann.json")
    assert len(s) == 1 and s[0].image.dtype == np.uint16
    # the crowd box is kept, flagged difficult (ignored when scoring, as in COCO)
    assert s[0].difficult.tolist() == [False, True, False]
    keep = ~s[0].difficult
    assert np.allclose(s[0].boxes[keep], IN_FRAME) and s[0].class_ids[keep].tolist() == [0, 1]
    assert s[0].class_names == ("nucleus", "mitosis")


def test_unknown_format_and_missing_path(tmp_path):
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(ValueError, match="Cannot tell the dataset format"):
        load_dataset(tmp_path / "notes.md")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="Unknown dataset format"):
        load_dataset(tmp_path, fmt="pascal")


def test_read_image_refuses_stacks(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((5, H, W), np.uint16))
    with pytest.raises(ValueError, match="stack"):
        read_image(tmp_path / "s.tif")


def test_a_tiff_naming_several_planes_or_channels_is_refused_not_averaged(tmp_path):
    """A 3-plane z-stack saved with its axes (tifffile, Fiji) or a 3-channel ImageJ
    hyperstack has a channel-first colour picture's shape; beside one 2-D mask it was
    read as the mean of its planes and scored without a word. Refused, naming what the
    file holds; with a mask stack beside it each plane is still its own sample."""
    lab = np.zeros((H, W), np.uint16)
    lab[20:36, 10:30] = 1
    planes = np.stack([image(1), image(2), image(3)])
    for name, kw, held in (("z.tif", {"metadata": {"axes": "ZYX"}}, "3 z planes"),
                           ("c.tif", {"imagej": True, "metadata": {"axes": "CYX"}},
                            "3 channels"),
                           ("t.ome.tif", {"metadata": {"axes": "TYX"}}, "3 time points")):
        tifffile.imwrite(tmp_path / name, planes, **kw)
        tifffile.imwrite(tmp_path / f"{name[:-4]}_masks.tif", lab)  # (Cellpose's name)
        with pytest.raises(ValueError, match=held + ".*one 2-D image"):
            load_dataset(tmp_path / name)
    tifffile.imwrite(tmp_path / "z_masks.tif", np.stack([lab, lab, lab]))
    s = load_dataset(tmp_path / "z.tif")
    assert [x.name for x in s] == ["z.tif[0]", "z.tif[1]", "z.tif[2]"]
    np.testing.assert_array_equal(s[2].image, planes[2])


def test_one_image_beside_a_stack_of_labels_names_the_mismatch(tmp_path):
    """An npz of one (H, W) 'image' and (Z, H, W) 'labels' used to be told to save the
    image as (T, H, W); the labels are as likely the mistake, so both shapes are named."""
    np.savez(tmp_path / "m.npz", image=image(1),
             labels=np.zeros((3, *image(1).shape), np.int32))
    with pytest.raises(ValueError, match=r"'labels' has shape \(3, .*a stack, but 'image' "
                                         r"has shape .*one image"):
        load_dataset(tmp_path / "m.npz")


def test_nan_pixels_in_an_npz_are_scored_but_said(tmp_path, caplog):
    """Eval reads NaN pixels as the image's median (as the live loop does) and scores the
    rest; the objects there count as missed, so it says how many pixels were not finite
    (the slide refuses such a file outright: it has to show those pixels)."""
    img = image(1).astype(np.float32)
    img[:, :5] = np.nan
    img[0, 7] = np.inf
    np.savez(tmp_path / "n.npz", image=img, boxes=np.array([[10, 10, 20, 20]], np.float32))
    with caplog.at_level("WARNING"):
        (s,) = load_dataset(tmp_path / "n.npz")
    said = [r.getMessage() for r in caplog.records if "NaN" in r.getMessage()]
    assert len(said) == 1 and f"{5 * img.shape[0] + 1} NaN / infinite pixels" in said[0]
    assert s.image.shape == img.shape
    caplog.clear()
    with caplog.at_level("WARNING"):
        np.savez(tmp_path / "ok.npz", image=image(1).astype(np.float32),
                 boxes=np.array([[10, 10, 20, 20]], np.float32))
        load_dataset(tmp_path / "ok.npz")
    assert not [r for r in caplog.records if "NaN" in r.getMessage()]


def test_simulated_held_out_samples():
    from inscope.detector.datasets import simulated_samples

    a = simulated_samples(2, 900001)
    b = simulated_samples(2, 900001)
    assert len(a) == 2 and a[0].name != a[1].name
    assert np.array_equal(a[1].image, b[1].image)  # same seed, same frames
    for s in a:
        h, w = s.image.shape
        assert len(s.boxes) > 0 and s.pixel_size_um and s.pixel_size_um > 0
        assert s.boxes[:, 0].min() >= -0.5 and s.boxes[:, 2].max() <= w - 0.5
        assert s.boxes[:, 1].min() >= -0.5 and s.boxes[:, 3].max() <= h - 0.5
    # slivers at the frame edge are flagged difficult, whole nuclei never are
    both = simulated_samples(6, 900002)
    hard = np.concatenate([s.difficult for s in both])
    boxes = np.concatenate([s.boxes for s in both])
    assert 0 < hard.sum() < len(hard) / 4
    inside = ((boxes[:, 0] > 1) & (boxes[:, 1] > 1) & (boxes[:, 2] < w - 1)
              & (boxes[:, 3] < h - 1))
    assert not hard[inside].any()


def test_a_file_box_drawn_round_a_mask_is_centred_on_the_masks_pixels(tmp_path):
    """An npz box [min, max + 1) round a mask (as the HeLa stack's) comes back centred on
    the mask's pixel centroid, the frame's convention detections and truth share."""
    mask = np.zeros((H, W), bool)
    mask[20:36, 10:30] = True  # rows 20-35, columns 10-29
    ys, xs = np.nonzero(mask)
    np.savez(tmp_path / "m.npz", image=image(), boxes=np.array([[xs.min(), ys.min(),
                                                                 xs.max() + 1, ys.max() + 1]]))
    b = load_dataset(tmp_path / "m.npz")[0].boxes[0]
    assert ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) == (xs.mean(), ys.mean())
    assert (b[2] - b[0], b[3] - b[1]) == (20, 16)  # the size is the pixel count


def _labels() -> np.ndarray:
    """Instance masks of the two BOXES' pixels (ids 7 and 3: any ids, any order)."""
    lab = np.zeros((H, W), np.uint16)
    for (x0, y0, x1, y1), i in zip(BOXES.astype(int), (7, 3), strict=True):
        lab[y0:y1, x0:x1] = i
    return lab


def _sorted(b: np.ndarray) -> np.ndarray:
    return b[np.lexsort(b.T[::-1])]


def test_npz_with_instance_labels_instead_of_boxes(tmp_path):
    """The slide microscope's npz (image + labels) scores as it is: one box round each
    mask, on the mask's pixels (the frame's convention)."""
    np.savez(tmp_path / "one.npz", image=image(), labels=_labels())
    s = load_dataset(tmp_path / "one.npz")
    assert len(s) == 1 and np.array_equal(_sorted(s[0].boxes), _sorted(IN_FRAME))
    np.savez(tmp_path / "stack.npz", images=np.stack([image(1), image(2)]),
             labels=np.stack([_labels(), np.zeros((H, W), np.int32)]))
    s = load_dataset(tmp_path / "stack.npz")
    assert [len(x.boxes) for x in s] == [2, 0] and s[1].name == "stack.npz[1]"
    np.savez(tmp_path / "bad.npz", image=image(), labels=_labels()[:10])
    with pytest.raises(ValueError, match="'labels' must have the image's shape"):
        load_dataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "frac.npz", image=image(), labels=_labels() * 0.5)
    with pytest.raises(ValueError, match="must be integers"):
        load_dataset(tmp_path / "frac.npz")


def test_images_with_mask_files_stardist_and_cellpose_layouts(tmp_path):
    sd = tmp_path / "stardist"
    (sd / "images").mkdir(parents=True)
    (sd / "masks").mkdir()
    tifffile.imwrite(sd / "images" / "a.tif", image(1))
    tifffile.imwrite(sd / "masks" / "a.tif", _labels())
    tifffile.imwrite(sd / "images" / "b.tif", image(2))  # no mask: not an annotated image
    assert detect_format(sd) == "masks"
    s = load_dataset(sd)
    assert [x.name for x in s] == ["a.tif"]
    assert np.array_equal(_sorted(s[0].boxes), _sorted(IN_FRAME))
    cp = tmp_path / "cellpose"
    cp.mkdir()
    cv2.imwrite(str(cp / "x_img.png"), image(3, np.uint8))
    cv2.imwrite(str(cp / "x_masks.png"), _labels())
    cv2.imwrite(str(cp / "y.png"), image(4, np.uint8))
    cv2.imwrite(str(cp / "y_masks.png"), np.zeros((H, W), np.uint16))
    s = load_dataset(cp)
    assert sorted((x.name, len(x.boxes)) for x in s) == [("x_img.png", 2), ("y.png", 0)]
    cv2.imwrite(str(cp / "z.png"), image(5, np.uint8))
    cv2.imwrite(str(cp / "z_masks.png"), _labels()[:20])
    with pytest.raises(ValueError, match="z_masks.png: the mask must be one grey image"):
        load_dataset(cp)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(ValueError, match="no image with a mask found"):
        load_dataset(empty)


def test_one_image_file_with_its_annotation_beside_it(tmp_path):
    """``inscope eval cell.tif`` scores one image: its annotation is found where its
    format keeps it (a mask beside it or in ../masks/, YOLO .txt, VOC .xml); an image
    with none gets one line naming where it looked and what to do."""
    cv2.imwrite(str(tmp_path / "a.png"), image(1, np.uint8))
    cv2.imwrite(str(tmp_path / "a_masks.png"), _labels())
    assert detect_format(tmp_path / "a.png") == "masks"
    s = load_dataset(tmp_path / "a.png")
    assert [x.name for x in s] == ["a.png"]
    assert np.array_equal(_sorted(s[0].boxes), _sorted(IN_FRAME))
    sd = tmp_path / "sd"
    (sd / "images").mkdir(parents=True)
    (sd / "masks").mkdir()
    tifffile.imwrite(sd / "images" / "c.tif", image(2))
    tifffile.imwrite(sd / "masks" / "c.tif", _labels())
    s = load_dataset(sd / "images" / "c.tif")
    assert np.array_equal(_sorted(s[0].boxes), _sorted(IN_FRAME))
    cv2.imwrite(str(tmp_path / "y.png"), image(3, np.uint8))
    cx, cy = (BOXES[:, 0] + BOXES[:, 2]) / 2 / W, (BOXES[:, 1] + BOXES[:, 3]) / 2 / H
    bw, bh = (BOXES[:, 2] - BOXES[:, 0]) / W, (BOXES[:, 3] - BOXES[:, 1]) / H
    np.savetxt(tmp_path / "y.txt", np.c_[np.zeros(2), cx, cy, bw, bh])
    assert detect_format(tmp_path / "y.png") == "yolo"
    assert np.allclose(_sorted(load_dataset(tmp_path / "y.png")[0].boxes), _sorted(IN_FRAME))
    cv2.imwrite(str(tmp_path / "lone.png"), image(4, np.uint8))
    with pytest.raises(ValueError, match=r"lone.png: no annotation found .*lone_masks"):
        load_dataset(tmp_path / "lone.png")


def test_data_science_bowl_folders_one_mask_file_per_nucleus(tmp_path):
    """The Data Science Bowl 2018 layout (ID/images/ID.png beside ID/masks/*.png, one
    binary mask per nucleus, colour images): a folder of samples, or one sample, gives
    one box round each mask file's pixels; a mask of another shape is one clear line."""
    lab = _labels()
    for sid, ids in (("s1", (7, 3)), ("s2", (7,))):
        (tmp_path / "dsb" / sid / "images").mkdir(parents=True)
        (tmp_path / "dsb" / sid / "masks").mkdir()
        cv2.imwrite(str(tmp_path / "dsb" / sid / "images" / f"{sid}.png"),
                    np.dstack([image(1, np.uint8)] * 3))
        for i in ids:
            cv2.imwrite(str(tmp_path / "dsb" / sid / "masks" / f"m{i}.png"),
                        ((lab == i) * 255).astype(np.uint8))
    assert detect_format(tmp_path / "dsb") == "masks"
    s = load_dataset(tmp_path / "dsb")
    assert [x.name for x in s] == ["s1/s1.png", "s2/s2.png"]
    assert s[0].image.shape == (H, W)  # colour read as grey
    assert np.array_equal(_sorted(s[0].boxes), _sorted(IN_FRAME))
    assert np.array_equal(s[1].boxes, IN_FRAME[:1])
    one = load_dataset(tmp_path / "dsb" / "s2")
    assert np.array_equal(one[0].boxes, IN_FRAME[:1])
    # a mask saved as colour, and a file that is no mask at all (skipped, not an end)
    (tmp_path / "dsb" / "s1" / "masks" / "a_notes.txt").write_text("checked by hand")
    cv2.imwrite(str(tmp_path / "dsb" / "s1" / "masks" / "m7.png"),
                np.dstack([((lab == 7) * 255).astype(np.uint8)] * 3))
    again = load_dataset(tmp_path / "dsb" / "s1")[0]
    assert np.array_equal(_sorted(again.boxes), _sorted(IN_FRAME))
    cv2.imwrite(str(tmp_path / "dsb" / "s2" / "masks" / "bad.png"),
                np.zeros((H, W + 1), np.uint8))
    with pytest.raises(ValueError, match=r"bad.png: each mask must be one image of the "):
        load_dataset(tmp_path / "dsb" / "s2")


def test_readers_keep_what_each_format_carries(tmp_path):
    """What the readers must not drop: npz class ids and boxes beside labels (the boxes
    win), a channel-first colour TIFF read as grey, a VOC file without <filename> (the
    image beside it by name) and its class ids, COCO images in an ``images/`` folder,
    a .yml data file, a folder of npz files, and a DSB mask saved as colour."""
    np.savez(tmp_path / "c.npz", image=image(), boxes=BOXES, class_ids=np.array([2, 1]),
             labels=np.zeros((H, W), np.int32))
    s = load_dataset(tmp_path / "c.npz")
    assert s[0].class_ids.tolist() == [2, 1] and np.array_equal(s[0].boxes, IN_FRAME)
    (tmp_path / "many").mkdir()
    for k in range(2):
        np.savez(tmp_path / "many" / f"{k}.npz", image=image(k), boxes=BOXES[:k + 1])
    assert detect_format(tmp_path / "many") == "npz"
    assert [len(x.boxes) for x in load_dataset(tmp_path / "many")] == [1, 2]

    cf = np.stack([np.full((H, W), v, np.uint16) for v in (30, 60, 90)])  # (3, H, W)
    tifffile.imwrite(tmp_path / "cf.tif", cf, photometric="minisblack")
    grey = read_image(tmp_path / "cf.tif")
    assert grey.shape == (H, W) and int(grey.max()) == 60

    cv2.imwrite(str(tmp_path / "v.png"), image(2, np.uint8))
    box = "".join(f"<{k}>{v:g}</{k}>" for k, v in zip(
        ("xmin", "ymin", "xmax", "ymax"), (BOXES[0, 0] + 1, BOXES[0, 1] + 1, BOXES[0, 2],
                                           BOXES[0, 3]), strict=True))
    (tmp_path / "v.xml").write_text(
        "<annotation><object><name>a</name><bndbox>" + box + "</bndbox></object>"
        "<object><name>b</name><bndbox>" + box + "</bndbox></object></annotation>")
    assert detect_format(tmp_path / "v.xml") == "voc"
    v = load_dataset(tmp_path / "v.xml")[0]
    assert v.name == "v.png" and v.class_ids.tolist() == [0, 1]
    assert v.class_ids.dtype == np.int32 and v.difficult.dtype == bool
    assert np.array_equal(v.boxes[0], IN_FRAME[0])
    (tmp_path / "bad.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="bad.xml: not valid XML"):
        load_dataset(tmp_path / "bad.xml")

    (tmp_path / "coco" / "images").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "coco" / "images" / "x.tif", image())
    b = BOXES[0]
    (tmp_path / "coco" / "ann.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "x.tif"}], "categories": [],
         "annotations": [{"image_id": 1, "bbox": [float(b[0]), float(b[1]),
                                                  float(b[2] - b[0]), float(b[3] - b[1])]}]}))
    c = load_dataset(tmp_path / "coco")[0]
    assert np.allclose(c.boxes, IN_FRAME[:1]) and c.image.dtype == np.uint16
    (tmp_path / "coco" / "only.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="needs 'images' and 'annotations'"):
        load_dataset(tmp_path / "coco" / "only.json")

    (tmp_path / "d.yml").write_text("a: 1\n")
    assert detect_format(tmp_path / "d.yml") == "yolo"


def test_labels_must_be_one_mask_of_non_negative_integer_ids(tmp_path):
    from inscope.detector.datasets import boxes_from_labels

    lab = _labels().astype(np.float32)  # whole numbers stored as float: accepted
    assert np.array_equal(_sorted(boxes_from_labels(lab)),
                          _sorted(boxes_from_labels(_labels())))
    with pytest.raises(ValueError, match="must be integers"):
        boxes_from_labels(lab + 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        boxes_from_labels(-_labels().astype(np.int32))
    with pytest.raises(ValueError, match="one 2-D mask per image"):
        boxes_from_labels(np.stack([_labels()] * 2))


def test_one_image_file_in_an_images_folder_and_its_other_annotation_places(tmp_path):
    """An image inside ``images/`` still finds a mask beside it; YOLO labels in
    ``../labels/`` and VOC files in ``../Annotations/`` are found too; the error names
    the places it looked, relative to the folder above the image's."""
    d = tmp_path / "a" / "images"
    d.mkdir(parents=True)
    cv2.imwrite(str(d / "p.png"), image(1, np.uint8))
    cv2.imwrite(str(d / "p_masks.png"), _labels())
    assert np.array_equal(_sorted(load_dataset(d / "p.png")[0].boxes), _sorted(IN_FRAME))
    cv2.imwrite(str(d / "q.png"), image(2, np.uint8))
    (tmp_path / "a" / "labels").mkdir()
    cx, cy = (BOXES[0, 0] + BOXES[0, 2]) / 2 / W, (BOXES[0, 1] + BOXES[0, 3]) / 2 / H
    bw, bh = (BOXES[0, 2] - BOXES[0, 0]) / W, (BOXES[0, 3] - BOXES[0, 1]) / H
    (tmp_path / "a" / "labels" / "q.txt").write_text(f"0 {cx} {cy} {bw} {bh}\n")
    assert detect_format(d / "q.png") == "yolo"
    assert np.allclose(load_dataset(d / "q.png")[0].boxes, IN_FRAME[:1])
    cv2.imwrite(str(d / "r.png"), image(3, np.uint8))
    (tmp_path / "a" / "Annotations").mkdir()
    x0, y0, x1, y1 = BOXES[1]
    (tmp_path / "a" / "Annotations" / "r.xml").write_text(
        f"<annotation><filename>r.png</filename><object><name>n</name><bndbox>"
        f"<xmin>{x0 + 1:g}</xmin><ymin>{y0 + 1:g}</ymin><xmax>{x1:g}</xmax>"
        f"<ymax>{y1:g}</ymax></bndbox></object></annotation>")
    (tmp_path / "a" / "JPEGImages").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "JPEGImages" / "r.png"), image(3, np.uint8))
    assert detect_format(d / "r.png") == "voc"
    assert np.array_equal(load_dataset(d / "r.png")[0].boxes, IN_FRAME[1:])
    cv2.imwrite(str(d / "s.png"), image(4, np.uint8))
    with pytest.raises(ValueError) as e:
        load_dataset(d / "s.png")
    msg = str(e.value)
    for where in ("images/s_masks.png", "masks/s.tif", "labels/s.txt", "Annotations/s.xml"):
        assert where in msg
