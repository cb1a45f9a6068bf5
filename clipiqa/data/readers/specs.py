"""What each supported dataset is: its declared score range and direction, layout on disk, aliases and
distortion type names (:data:`DATASETS`), and :func:`canonical_name` for name look-ups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .common import norm_key


@dataclass(frozen=True)
class DatasetSpec:
    """Short description of a supported dataset (score scale, direction, layout)."""

    name: str
    title: str
    score_range: tuple[float, float]
    higher_better: bool
    synthetic: bool
    score_column: str
    layout: str
    description: str
    aliases: tuple[str, ...] = ()
    distortion_names: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """Dict-style access (``spec["score_range"]``) for convenience."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


_KADID_TYPES = {
    "01": "gaussian blur", "02": "lens blur", "03": "motion blur", "04": "color diffusion",
    "05": "color shift", "06": "color quantization", "07": "color saturation 1",
    "08": "color saturation 2", "09": "jpeg2000", "10": "jpeg", "11": "white noise",
    "12": "white noise in color component", "13": "impulse noise", "14": "multiplicative noise",
    "15": "denoise", "16": "brighten", "17": "darken", "18": "mean shift", "19": "jitter",
    "20": "non-eccentricity patch", "21": "pixelate", "22": "quantization", "23": "color block",
    "24": "high sharpen", "25": "contrast change",
}

_TID_TYPES = {
    "01": "additive gaussian noise", "02": "additive noise in color components",
    "03": "spatially correlated noise", "04": "masked noise", "05": "high frequency noise",
    "06": "impulse noise", "07": "quantization noise", "08": "gaussian blur",
    "09": "image denoising", "10": "jpeg compression", "11": "jpeg2000 compression",
    "12": "jpeg transmission errors", "13": "jpeg2000 transmission errors",
    "14": "non eccentricity pattern noise", "15": "local block-wise distortions",
    "16": "mean shift", "17": "contrast change", "18": "change of color saturation",
    "19": "multiplicative gaussian noise", "20": "comfort noise",
    "21": "lossy compression of noisy images", "22": "color quantization with dither",
    "23": "chromatic aberrations", "24": "sparse sampling and reconstruction",
}

DATASETS: dict[str, DatasetSpec] = {
    "koniq10k": DatasetSpec(
        name="koniq10k", title="KonIQ-10k", score_range=(0.0, 100.0), higher_better=True,
        synthetic=False, score_column="MOS_zscore",
        layout=("<root>/koniq10k_scores_and_distributions.csv with columns image_name, c1..c5, "
                "c_total, MOS, SD, MOS_zscore; images under <root>/1024x768/ (or 512x384/); "
                "optional <root>/koniq10k_distributions_sets.csv with columns image_name, set "
                "(training/validation/test)"),
        description="10,073 in-the-wild photos; MOS_zscore 0-100 (used by papers), MOS 1-5; higher is better.",
        aliases=("koniq", "koniq10k"),
    ),
    "livec": DatasetSpec(
        name="livec", title="LIVE In the Wild Challenge (LIVEC)", score_range=(0.0, 100.0),
        higher_better=True, synthetic=False, score_column="AllMOS_release",
        layout=("<root>/Data/AllImages_release.mat (variable AllImages_release, image names), "
                "<root>/Data/AllMOS_release.mat (variable AllMOS_release), optional "
                "<root>/Data/AllStdDev_release.mat; images under <root>/Images/; the first 7 "
                "entries are practice images and are dropped"),
        description="1,162 in-the-wild photos (1,169 minus 7 practice images); MOS 0-100, higher is better.",
        aliases=("livec", "clive", "livechallenge", "livewild", "liveitw"),
    ),
    "kadid10k": DatasetSpec(
        name="kadid10k", title="KADID-10k", score_range=(1.0, 5.0), higher_better=True,
        synthetic=True, score_column="dmos",
        layout=("<root>/dmos.csv with columns dist_img, ref_img, dmos, var; images "
                "<root>/images/Ixx_yy_zz.png (reference, type 01-25, level 01-05)"),
        description="10,125 images, 81 references x 25 types x 5 levels; 'dmos' 1-5 but higher is better.",
        aliases=("kadid", "kadid10k"),
        distortion_names=_KADID_TYPES,
    ),
    "tid2013": DatasetSpec(
        name="tid2013", title="TID2013", score_range=(0.0, 9.0), higher_better=True,
        synthetic=True, score_column="mos",
        layout=("<root>/mos_with_names.txt with lines '<mos> <name>' (e.g. '5.51429 i01_01_1.bmp'), "
                "optional <root>/mos_std.txt (one value per line, same order); images "
                "<root>/distorted_images/iXX_YY_L.bmp (reference XX, type YY, level L; the "
                "leading i may be upper-case)"),
        description="3,000 images, 25 references x 24 types x 5 levels; MOS 0-9, higher is better.",
        aliases=("tid", "tid2013"),
        distortion_names=_TID_TYPES,
    ),
    "csiq": DatasetSpec(
        name="csiq", title="CSIQ", score_range=(0.0, 1.0), higher_better=False,
        synthetic=True, score_column="dmos",
        layout=("<root>/csiq.DMOS.xlsx with sheet all_by_image and columns image, dst_idx, "
                "dst_type, dst_lev, dmos_std, dmos (header may sit below title rows), or a text "
                "variant <root>/csiq.DMOS.csv|.txt (also csiq_dmos.csv|.txt): a comma-, tab- or "
                "semicolon-separated table with the same header (whitespace-separated only when no "
                "value contains a space); images <root>/dst_imgs/<type>/<ref>.<TAG>.<level>.png"),
        description="866 images, 30 references x 6 types x 4-5 levels; DMOS 0-1, lower is better.",
        aliases=("csiq",),
    ),
    "live": DatasetSpec(
        name="live", title="LIVE Image Quality Assessment Database, release 2",
        score_range=(0.0, 100.0), higher_better=False, synthetic=True, score_column="dmos_new",
        layout=("<root>/dmos_realigned.mat (variables dmos_new, orgs, optional dmos_std), "
                "<root>/refnames_all.mat (variable refnames_all); folders jp2k, jpeg, wn, gblur, "
                "fastfading holding img<k>.bmp (k 1-based within the folder); the 982 entries run "
                "jp2k 227, jpeg 233, wn 174, gblur 174, fastfading 174; entries with orgs == 1 are "
                "dropped"),
        description="779 distorted images of 29 references, 5 types; realigned DMOS ~0-100, lower is better.",
        aliases=("live", "live2", "liver2", "liverelease2", "liveiqa"),
    ),
    "spaq": DatasetSpec(
        name="spaq", title="SPAQ", score_range=(0.0, 100.0), higher_better=True,
        synthetic=False, score_column="MOS",
        layout=("<root>/Annotations/MOS and Image attribute scores.xlsx with columns Image name, "
                "MOS, Brightness, Colorfulness, Contrast, Noisiness, Sharpness; images under "
                "<root>/TestImage/"),
        description="11,125 smartphone photos (~4000x3000, resize before use); MOS 0-100, higher is better.",
        aliases=("spaq",),
    ),
}

_ALIASES: dict[str, str] = {
    _alias: spec.name for spec in DATASETS.values() for _alias in (spec.name, *spec.aliases)
}


def canonical_name(name: str) -> str:
    """Return the canonical dataset name for ``name`` or an alias (case-insensitive).

    Raises ``ValueError`` listing the supported names when ``name`` is unknown.
    """
    key = norm_key(name)
    if key not in _ALIASES:
        supported = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}; supported: {supported} "
                         f"(aliases: {', '.join(sorted(set(_ALIASES) - set(DATASETS)))})")
    return _ALIASES[key]
