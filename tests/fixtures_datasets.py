"""Builders of small dataset folders in each real on-disk format, for tests.

Each ``make_<dataset>(root, ...)`` writes a miniature copy of the dataset's published layout
(same file names, column names, .mat variable names, sheet names) with tiny images under
``root`` and returns ``root``. The scores are deterministic so tests can assert real values.
Import from tests as ``from fixtures_datasets import make_koniq10k`` (pytest puts ``tests/`` on
``sys.path``), or use ``fixture_for(name).build(root)`` for any registered dataset.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image
from scipy.io import savemat

__all__ = [
    "DatasetFixture", "FIXTURES", "LIVE_FOLDERS", "LIVE_ORGS_DROPPED", "image_bytes", "make_csiq", "make_kadid10k",
    "make_koniq10k", "make_labels_csv", "make_live", "make_livec", "make_pyiqa_meta", "make_spaq",
    "fixture_for", "make_tid2013", "write_image",
]

LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
LIVE_ORGS_DROPPED = 203  # 982 - 779, as in the real release


def image_bytes(fmt: str = "PNG", shade: int = 128, size: int = 8) -> bytes:
    """Encoded bytes of a tiny RGB image with a simple gradient."""
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                       np.full((size, size), shade % 256, np.uint8)], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, shade: int = 128) -> Path:
    """Write a tiny image whose format follows the file extension."""
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".png": "PNG"}[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt, shade))
    return path


def _cell(names: list[str], column: bool = True) -> np.ndarray:
    """A MATLAB cell array of strings for savemat (N x 1 or 1 x N)."""
    cell = np.empty((len(names), 1) if column else (1, len(names)), dtype=object)
    for i, name in enumerate(names):
        cell.flat[i] = name
    return cell


def make_koniq10k(root: Path, n: int = 10, with_sets: bool = True, upper_case: bool = False) -> Path:
    """KonIQ-10k: scores CSV, 1024x768/*.jpg, optional official split file.

    Image i (0-based) is ``{1000+i}.jpg`` with MOS = 1 + 4 i / (n - 1), SD = 0.5,
    MOS_zscore = 10 + 8 i; sets cycle training, training, validation, test.
    ``upper_case`` writes upper-case column and file names (readers must ignore case).
    """
    root.mkdir(parents=True, exist_ok=True)
    names = [f"{1000 + i}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        write_image(root / "1024x768" / name, shade=i * 20)
    counts = np.tile([0, 1, 2, 5, 2], (n, 1))
    table = pd.DataFrame({"image_name": names, **{f"c{k}": counts[:, k - 1] for k in range(1, 6)},
                          "c_total": counts.sum(axis=1),
                          "MOS": [1 + 4 * i / (n - 1) for i in range(n)],
                          "SD": [0.5] * n, "MOS_zscore": [10.0 + 8 * i for i in range(n)]})
    scores_name = "koniq10k_scores_and_distributions.csv"
    if upper_case:
        table.columns = [c.upper() for c in table.columns]
        scores_name = scores_name.upper()
    table.to_csv(root / scores_name, index=False)
    if with_sets:
        cycle = ["training", "training", "validation", "test"]
        sets = pd.DataFrame({"image_name": names, "set": [cycle[i % 4] for i in range(n)]})
        sets.to_csv(root / "koniq10k_distributions_sets.csv", index=False)
    return root


def make_livec(root: Path, n: int = 8) -> Path:
    """LIVEC: 7 practice entries t1..t7.bmp (in Images/trainingImages/) then ``n`` images.

    Image i (0-based, after the practice ones) is ``{100+i}.bmp`` with MOS 20 + 5 i, std 10 + i.
    Practice entries get MOS 99 so that failing to drop them shows.
    """
    root.mkdir(parents=True, exist_ok=True)
    practice = [f"t{k}.bmp" for k in range(1, 8)]
    names = [f"{100 + i}.bmp" for i in range(n)]
    for name in practice:
        write_image(root / "Images" / "trainingImages" / name)
    for i, name in enumerate(names):
        write_image(root / "Images" / name, shade=i * 30)
    mos = np.array([99.0] * 7 + [20.0 + 5 * i for i in range(n)])
    std = np.array([1.0] * 7 + [10.0 + i for i in range(n)])
    (root / "Data").mkdir(exist_ok=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": _cell(practice + names)})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos[None, :]})
    savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": std[None, :]})
    return root


def make_kadid10k(root: Path, n_refs: int = 3, n_types: int = 2, n_levels: int = 2) -> Path:
    """KADID-10k: dmos.csv and images/Ixx_yy_zz.png plus reference images Ixx.png.

    Rows run over refs, types, levels; dmos = 5 - 0.5 * (level - 1) - 0.25 * (type - 1)
    (higher better), var = 0.04 * level.
    """
    images = root / "images"
    rows = []
    for r in range(1, n_refs + 1):
        write_image(images / f"I{r:02d}.png", shade=r * 40)
        for t in range(1, n_types + 1):
            for lev in range(1, n_levels + 1):
                name = f"I{r:02d}_{t:02d}_{lev:02d}.png"
                write_image(images / name, shade=r * 40 + t * 5 + lev)
                rows.append({"dist_img": name, "ref_img": f"I{r:02d}.png",
                             "dmos": 5 - 0.5 * (lev - 1) - 0.25 * (t - 1), "var": 0.04 * lev})
    pd.DataFrame(rows).to_csv(root / "dmos.csv", index=False)
    return root


def make_tid2013(root: Path, n_refs: int = 3, n_types: int = 2, n_levels: int = 2) -> Path:
    """TID2013: mos_with_names.txt ('mos name' lines), mos_std.txt, distorted_images/*.bmp.

    Reference 02's files are written with an upper-case ``I`` (and ``.BMP``) while the text
    lists them lower-case; reference 03 is listed upper-case but stored lower-case, as real
    releases mix both. mos = 8 - level - 0.5 * (type - 1); std = 0.1 * level.
    """
    folder = root / "distorted_images"
    lines, stds = [], []
    for r in range(1, n_refs + 1):
        for t in range(1, n_types + 1):
            for lev in range(1, n_levels + 1):
                stem = f"i{r:02d}_{t:02d}_{lev}"
                file_name = f"I{stem[1:]}.BMP" if r == 2 else f"{stem}.bmp"
                listed = f"I{stem[1:]}.bmp" if r == 3 else f"{stem}.bmp"
                write_image(folder / file_name, shade=r * 50 + t * 7 + lev)
                lines.append(f"{8 - lev - 0.5 * (t - 1):.5f} {listed}")
                stds.append(f"{0.1 * lev:.5f}")
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    (root / "mos_std.txt").write_text("\n".join(stds) + "\n")
    return root


# (folder, file TAG, dst_type as written in the spreadsheet)
CSIQ_TYPES = (("awgn", "AWGN", "noise"), ("jpeg", "JPEG", "jpeg"), ("jpeg2000", "jpeg2000", "jpeg 2000"))


def make_csiq(root: Path, variant: str = "xlsx", refs: tuple[str, ...] = ("1600", "aerial_city"),
              n_levels: int = 2) -> Path:
    """CSIQ: dst_imgs/<type>/<ref>.<TAG>.<level>.png and a DMOS table.

    ``variant`` "xlsx" writes csiq.DMOS.xlsx with sheet all_by_image below a title row (plus a
    decoy first sheet); "csv" writes csiq.DMOS.csv; "tsv" writes a tab-separated csiq.DMOS.txt.
    dmos = 0.1 * level + 0.05 * type_index + 0.01 * ref_index (lower better), dmos_std = 0.02.
    Reference "1600" is written as a number in the xlsx, as in the real file.
    """
    rows = []
    for ri, ref in enumerate(refs):
        for ti, (folder, tag, dst_type) in enumerate(CSIQ_TYPES, start=1):
            for lev in range(1, n_levels + 1):
                write_image(root / "dst_imgs" / folder / f"{ref}.{tag}.{lev}.png", shade=ri * 60 + ti * 9 + lev)
                rows.append({"image": int(ref) if ref.isdigit() else ref, "dst_idx": ti,
                             "dst_type": dst_type, "dst_lev": lev, "dmos_std": 0.02,
                             "dmos": round(0.1 * lev + 0.05 * ti + 0.01 * ri, 4)})
    table = pd.DataFrame(rows)
    if variant == "xlsx":
        title = pd.DataFrame([["CSIQ DMOS by image"] + [None] * (table.shape[1] - 1),
                              list(table.columns)])
        body = pd.concat([title, pd.DataFrame(table.to_numpy())], ignore_index=True)
        with pd.ExcelWriter(root / "csiq.DMOS.xlsx") as writer:
            pd.DataFrame({"note": ["see all_by_image"]}).to_excel(writer, sheet_name="info", index=False)
            body.to_excel(writer, sheet_name="all_by_image", index=False, header=False)
    elif variant == "csv":
        table.to_csv(root / "csiq.DMOS.csv", index=False)
    elif variant == "tsv":
        table.to_csv(root / "csiq.DMOS.txt", index=False, sep="\t")
    else:
        raise ValueError(f"unknown CSIQ variant {variant!r}")
    return root


def live_orgs() -> np.ndarray:
    """The fixture's orgs flags: 203 of the 982 entries are originals (seeded choice)."""
    orgs = np.zeros(982)
    orgs[np.random.default_rng(0).choice(982, LIVE_ORGS_DROPPED, replace=False)] = 1
    return orgs


def live_dmos() -> np.ndarray:
    """The fixture's realigned DMOS: entry e has dmos = (e * 37) % 100 + 0.5."""
    return (np.arange(982) * 37 % 100) + 0.5


def make_live(root: Path) -> Path:
    """LIVE release 2: five folders of img<k>.bmp, dmos_realigned.mat and refnames_all.mat.

    All 982 entries exist (entry order jp2k 227, jpeg 233, wn 174, gblur 174, fastfading 174);
    orgs = :func:`live_orgs`, dmos_new = :func:`live_dmos`, dmos_std = 5; entry e refers to
    ``ref{e % 29:02d}.bmp``.
    """
    blob = image_bytes("BMP", size=4)
    for folder, count in LIVE_FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for k in range(1, count + 1):
            (root / folder / f"img{k}.bmp").write_bytes(blob)
    refs = [f"ref{e % 29:02d}.bmp" for e in range(982)]
    savemat(root / "dmos_realigned.mat", {"dmos_new": live_dmos()[None, :], "orgs": live_orgs()[None, :],
                                          "dmos_std": np.full((1, 982), 5.0)})
    savemat(root / "refnames_all.mat", {"refnames_all": _cell(refs, column=False)})
    return root


def make_spaq(root: Path, n: int = 6) -> Path:
    """SPAQ: Annotations/MOS and Image attribute scores.xlsx and TestImage/*.jpg.

    Image i (0-based) is ``{i+1:05d}.jpg`` with MOS 10 + 15 i.
    """
    names = [f"{i + 1:05d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        write_image(root / "TestImage" / name, shade=i * 40)
    table = pd.DataFrame({"Image name": names, "MOS": [10.0 + 15 * i for i in range(n)],
                          "Brightness": 50.0, "Colorfulness": 50.0, "Contrast": 50.0,
                          "Noisiness": 50.0, "Sharpness": 50.0})
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    table.to_excel(root / "Annotations" / "MOS and Image attribute scores.xlsx", index=False)
    return root


def make_labels_csv(root: Path, layout: str = "plain", n: int = 5) -> Path:
    """A user label file next to images ``imgs/p{i}.png``; returns the CSV path.

    ``layout``: "plain" (path,score,content_id with two images per content), "pyiqa"
    (image_name,MOS,std), "headerless" (name,score rows). Score of image i is 1 + i * 0.75.
    """
    names = [f"imgs/p{i}.png" for i in range(n)]
    for i, name in enumerate(names):
        write_image(root / name, shade=i * 50)
    scores = [1 + i * 0.75 for i in range(n)]
    csv = root / f"labels_{layout}.csv"
    if layout == "plain":
        pd.DataFrame({"path": names, "score": scores,
                      "content_id": [f"c{i // 2}" for i in range(n)]}).to_csv(csv, index=False)
    elif layout == "pyiqa":
        pd.DataFrame({"image_name": names, "MOS": scores, "std": [0.3] * n}).to_csv(csv, index=False)
    elif layout == "headerless":
        csv.write_text("".join(f"{name},{score}\n" for name, score in zip(names, scores)))
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return csv


def make_pyiqa_meta(root: Path, dataset: str) -> tuple[Path, Path]:
    """A pyiqa-style meta-info CSV and its image folder; returns ``(csv, images_root)``.

    The layouts follow pyiqa's published meta-info files (headers as pyiqa writes them):

    - "live": ``meta_info_LIVEIQADataset.csv`` with ``ref_name,dist_name,mos`` — the header says
      ``mos`` but the values are LIVE's DMOS on ~0-100, **lower better**; names
      ``refimgs/ref<r>.bmp`` and ``<folder>/img<k>.bmp`` under ``root``. 10 rows, DMOS
      ``5 + 10 i`` for row i, three references.
    - "csiq": ``meta_info_CSIQDataset.csv`` with ``ref_name,dist_name,dmos`` (DMOS 0-1, lower
      better); names ``<ref>.png`` and ``<ref>.<TAG>.<level>.png`` in ``root/dst_imgs_all``.
      8 rows, DMOS ``0.05 + 0.1 i``, two references.
    - "livec": ``meta_info_LIVEChallengeDataset.csv`` with ``img_name,mos,std``: the 7 practice
      images ``t1.bmp..t7.bmp`` first (MOS 99, stored in ``Images/trainingImages``, so they do not
      resolve under ``Images``), then ``100.bmp..107.bmp`` with MOS ``20 + 5 i`` under ``root/Images``.
    """
    root.mkdir(parents=True, exist_ok=True)
    if dataset == "live":
        folders = ["jp2k"] * 5 + ["wn"] * 5
        rows = [{"ref_name": f"refimgs/ref{i % 3}.bmp", "dist_name": f"{f}/img{i + 1}.bmp", "mos": 5.0 + 10 * i}
                for i, f in enumerate(folders)]
        for i, row in enumerate(rows):
            write_image(root / row["dist_name"], shade=i * 20)
        csv, images = root / "meta_info_LIVEIQADataset.csv", root
    elif dataset == "csiq":
        tags = [("1600", "AWGN"), ("1600", "JPEG"), ("aerial_city", "AWGN"), ("aerial_city", "JPEG")]
        rows = [{"ref_name": f"{ref}.png", "dist_name": f"{ref}.{tag}.{lev}.png",
                 "dmos": round(0.05 + 0.1 * (2 * k + lev - 1), 4)}
                for k, (ref, tag) in enumerate(tags) for lev in (1, 2)]
        images = root / "dst_imgs_all"
        for i, row in enumerate(rows):
            write_image(images / row["dist_name"], shade=i * 25)
        csv = root / "meta_info_CSIQDataset.csv"
    elif dataset == "livec":
        practice = [f"t{k}.bmp" for k in range(1, 8)]
        names = [f"{100 + i}.bmp" for i in range(8)]
        for name in practice:
            write_image(root / "Images" / "trainingImages" / name)
        for i, name in enumerate(names):
            write_image(root / "Images" / name, shade=i * 30)
        rows = ([{"img_name": n, "mos": 99.0, "std": 1.0} for n in practice]
                + [{"img_name": n, "mos": 20.0 + 5 * i, "std": 10.0 + i} for i, n in enumerate(names)])
        csv, images = root / "meta_info_LIVEChallengeDataset.csv", root / "Images"
    else:
        raise ValueError(f"unknown pyiqa meta layout {dataset!r}")
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, images


@dataclass(frozen=True)
class DatasetFixture:
    """A registered dataset's test folder: how to build it in the real on-disk format, how many rows its reader
    gives, its label file and one of its images (relative to the root; None: not checked)."""

    build: Callable[[Path], Path]
    rows: int
    label_file: str
    image: str | None


FIXTURES: dict[str, DatasetFixture] = {
    "koniq10k": DatasetFixture(make_koniq10k, 10, "koniq10k_scores_and_distributions.csv", "1024x768/1003.jpg"),
    "livec": DatasetFixture(make_livec, 8, "Data/AllMOS_release.mat", "Images/104.bmp"),
    "kadid10k": DatasetFixture(make_kadid10k, 12, "dmos.csv", "images/I02_01_02.png"),
    "tid2013": DatasetFixture(make_tid2013, 12, "mos_with_names.txt", "distorted_images/i01_02_1.bmp"),
    "csiq": DatasetFixture(make_csiq, 12, "csiq.DMOS.xlsx", "dst_imgs/jpeg/1600.JPEG.2.png"),
    "live": DatasetFixture(make_live, 982 - LIVE_ORGS_DROPPED, "refnames_all.mat", None),
    "spaq": DatasetFixture(make_spaq, 6, "Annotations/MOS and Image attribute scores.xlsx", "TestImage/00004.jpg"),
}
"""One entry per reader of ``clipiqa.data.readers.READERS``: ``tests/test_readers.py`` fails for a registered
reader without one."""


def fixture_for(name: str) -> DatasetFixture:
    """The fixture of registered dataset ``name``; a registered reader without one fails its tests, saying what to
    add."""
    if name not in FIXTURES:
        raise AssertionError(f"dataset reader {name!r} is registered (clipiqa/data/readers/registry.py) but "
                             f"tests/fixtures_datasets.py has no FIXTURES entry for it: add a builder that writes "
                             "the dataset's real on-disk format, its row count, label file and one image")
    return FIXTURES[name]
