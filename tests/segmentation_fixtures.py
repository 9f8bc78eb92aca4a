"""Tiny ImageNet-Segmentation and PascalVOC 2012 trees in their published formats, written by
the tests: a gtsegs_ijcv.mat in MATLAB v7.3 (HDF5) layout and a VOC2012 folder with palette
PNGs and ImageSets/Segmentation/val.txt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_gtsegs(folder: Path, codes: tuple[str, ...] = ("n02084071_17", "n02121808_4")) -> dict:
    """gtsegs_ijcv.mat with one non-square image per code, MATLAB's layout: value/{img,gt,id}
    [N, 1] object references; img -> uint8 [3, W, H]; gt -> a [1, 1] cell -> mask [W, H];
    id -> UTF-16 code units [L, 1]. Returns {"path", "images", "masks"} ([H, W(, 3)] arrays)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gtsegs_ijcv.mat"
    images, masks = [], []
    with h5py.File(path, "w") as f:
        refs, value = f.create_group("#refs#"), f.create_group("value")
        n = len(codes)
        img, gt, ids = (value.create_dataset(k, (n, 1), dtype=h5py.ref_dtype) for k in
                        ("img", "gt", "id"))  # fmt: skip
        for i, code in enumerate(codes):
            h, w = 20 + 4 * i, 28
            rgb = _rgb(h, w, i)
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4 : h // 2 + 3, w // 3 :] = 1
            img[i, 0] = refs.create_dataset(f"img{i}", data=rgb.transpose(2, 1, 0)).ref
            cell = refs.create_dataset(f"gt{i}", (1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = refs.create_dataset(f"gt{i}_mask", data=mask.transpose(1, 0)).ref
            gt[i, 0] = cell.ref
            units = np.array([ord(c) for c in code], np.uint16)[:, None]
            ids[i, 0] = refs.create_dataset(f"id{i}", data=units).ref
            images.append(rgb)
            masks.append(mask.astype(bool))
    return {"path": path, "images": images, "masks": masks}


def write_class_map(path: Path, words: dict[str, str]) -> Path:
    path.write_text(json.dumps(words), encoding="utf-8")
    return path


def voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved label index), 256 entries."""
    pal = []
    for k in range(256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _labels(h: int, w: int, regions: list[tuple[int, slice, slice]]) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    for value, rows, cols in regions:
        lab[rows, cols] = value
    return lab


def voc_cases(h: int = 60, w: int = 80) -> dict[str, np.ndarray]:
    """Label images: a cat with a void border; a dog and a person; a horse with a 1-pixel
    bottle that a 224 x 224 nearest resize drops (single class as published); background only."""
    cat = _labels(h, w, [(8, slice(10, 40), slice(20, 60))])
    cat[9, 19:61] = 255
    cat[40, 19:61] = 255
    two = _labels(h, w, [(12, slice(5, 30), slice(5, 35)), (15, slice(30, 55), slice(40, 75))])
    horse = _labels(500, 400, [(13, slice(150, 400), slice(50, 350))])
    horse[0, 0] = 5  # a bottle pixel no 224-grid sample reads (PIL nearest reads rows >= 1)
    return {"2007_000001": cat, "2007_000002": two, "2007_000003": horse,
            "2007_000004": np.zeros((h, w), np.uint8)}  # fmt: skip


def write_voc(root: Path, cases: dict[str, np.ndarray] | None = None) -> Path:
    """root/VOCdevkit/VOC2012 with JPEGImages, SegmentationClass (palette PNGs) and
    ImageSets/Segmentation/val.txt listing every case; returns the VOC2012 folder."""
    cases = voc_cases() if cases is None else cases
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for i, (sid, labels) in enumerate(cases.items()):
        Image.fromarray(_rgb(*labels.shape, 10 + i)).save(voc / "JPEGImages" / f"{sid}.jpg")
        png = Image.fromarray(labels, mode="P")
        png.putpalette(voc_palette())
        png.save(voc / "SegmentationClass" / f"{sid}.png")
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(cases) + "\n")
    return voc
