"""Photo loading for the network: EXIF orientation, resize, centre crop, normalisation.

Reproduces the official DUSt3R loader exactly (``dust3r_reference.md`` §1.10):

* size 512: the long side is resized to 512 (``round`` of each side), LANCZOS when shrinking and
  BICUBIC otherwise, then each side is centre-cropped down to a multiple of 16 around
  ``(W // 2, H // 2)``; a square result is cropped to 4:3 (512x384) unless ``square_ok``.
* size 224: the short side is resized to 224, then a centre crop of 224x224.

Each loaded image keeps ``photo_from_map``, the affine from network-image pixels to pixels of the
original (EXIF-oriented) photo, in the project's pixel-centre convention (the centre of the
top-left pixel is (0, 0)), so that ``K_photo = photo_from_map @ K``.

The network input is ``normalize(rgb)``: ``(x / 255 - 0.5) / 0.5`` in [-1, 1], channels first.

Blender shows a photo's stored pixels and ignores EXIF orientation, so the worker writes an
upright copy of every photo stored sideways or mirrored, and of every HEIC photo, which Blender
cannot read (:func:`write_upright_copies`).
torch-free: numpy and Pillow only.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import ExifTags, Image, ImageOps

from .errors import InputError

if TYPE_CHECKING:
    from .result import ImageResult

try:  # HEIC/HEIF (iPhones' default format) decodes through pillow-heif, when it is installed
    import pillow_heif
except ImportError:
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

log = logging.getLogger(__name__)

HEIF_EXTENSIONS = (".heic", ".heif")
"""Photo formats Pillow reads only with pillow-heif, and Blender not at all."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", *HEIF_EXTENSIONS)
"""File name endings (lower case) treated as photos."""

_NO_HEIF_READER = (
    "a HEIC/HEIF photo, but the worker's Python lacks pillow-heif (the extension's zip bundles it; "
    "in a Worker Python environment: pip install pillow-heif), or convert the photos to JPEG"
)

PATCH_SIZE = 16
"""The network's patch size: 512-path crops are multiples of it."""

# What Pillow raises for unreadable, truncated or corrupt files (UnidentifiedImageError is an
# OSError; some decoders raise SyntaxError or ValueError; huge images a DecompressionBombError).
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class LoadedImage:
    """One photo prepared for the network.

    Attributes:
        file: path of the photo.
        photo_size: ``(width, height)`` of the photo after EXIF orientation.
        photo_from_map: ``(3, 3)`` float64 affine, network-image pixel -> photo pixel
            (pixel-centre convention).
        rgb: ``(H, W, 3)`` uint8, the network image (exactly the official loader's).
    """

    file: str
    photo_size: tuple[int, int]
    photo_from_map: np.ndarray
    rgb: np.ndarray


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_image_files(folder: str | Path) -> list[str]:
    """Paths of the photos in ``folder`` (not recursive), sorted by name; other files ignored.

    Raises:
        InputError: ``folder`` is not a readable folder.
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise InputError(
            f"Cannot list the photo folder {folder}: {exc}. Pick a folder of photos."
        ) from exc
    folder = Path(folder)
    return [str(folder / n) for n in names if _is_image_name(n) and (folder / n).is_file()]


def _open_oriented(path: str | Path) -> Image.Image:
    """The photo decoded in full (so truncation shows now), EXIF-oriented, RGB."""
    with Image.open(path) as img:
        img.load()  # decode now: a truncated file raises here, not later
        oriented = ImageOps.exif_transpose(img)
        return oriented.convert("RGB")


def load_photo(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 full-resolution photo, EXIF-oriented, RGB.

    Raises:
        InputError: the file cannot be read or decoded.
    """
    try:
        return np.asarray(_open_oriented(path))
    except _READ_ERRORS as exc:
        raise InputError(f"Cannot read the photo {path}: {exc}.") from exc


def _resize_long_side(img: Image.Image, long_side: int) -> Image.Image:
    """Resize so the long side is ``long_side`` (each side rounded), as the reference does."""
    longest = max(img.size)
    interp = Image.Resampling.LANCZOS if longest > long_side else Image.Resampling.BICUBIC
    new_size = tuple(int(round(s * long_side / longest)) for s in img.size)
    return img.resize(new_size, interp)


def _crop_box(width: int, height: int, size: int, square_ok: bool) -> tuple[int, int, int, int]:
    """The reference's centre-crop box ``(left, top, right, bottom)`` on the resized image."""
    cx, cy = width // 2, height // 2
    if size == 224:
        half = min(cx, cy)
        box = (cx - half, cy - half, cx + half, cy + half)
    else:
        # Half-sizes rounded down so each side is a multiple of the patch size.
        half_w = ((2 * cx) // PATCH_SIZE) * PATCH_SIZE / 2
        half_h = ((2 * cy) // PATCH_SIZE) * PATCH_SIZE / 2
        if not square_ok and width == height:
            half_h = 3 * half_w / 4
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    # Pillow rounds a float crop box with round(); do it here so the offset we record is exact.
    return tuple(int(round(v)) for v in box)


def _photo_from_map(
    photo_size: tuple[int, int], resized_size: tuple[int, int], left: int, top: int
) -> np.ndarray:
    """Affine from network pixels to photo pixels (pixel centres at integer coordinates).

    Pillow's resize maps the continuous coordinate ``x_resized + 0.5`` (pixel edges at integers)
    to ``(x_resized + 0.5) * W_photo / W_resized`` in the photo; x and y factors differ slightly
    because each side is rounded separately.
    """
    sx = photo_size[0] / resized_size[0]
    sy = photo_size[1] / resized_size[1]
    return np.array(
        [
            [sx, 0.0, sx * (left + 0.5) - 0.5],
            [0.0, sy, sy * (top + 0.5) - 0.5],
            [0.0, 0.0, 1.0],
        ],
        dtype=np.float64,
    )


def resize_and_crop(
    photo: Image.Image, size: int = 512, square_ok: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Resize and centre-crop an oriented photo as the reference loader does.

    Args:
        photo: any Pillow image (RGB for the network; a float ``"F"`` image works too).
        size: 512 or 224, see the module docstring.
        square_ok: keep a square image square at size 512.

    Returns:
        ``(image, photo_from_map)``: the cropped pixels as an array (``(H, W, 3) uint8`` for RGB)
        and the ``(3, 3)`` float64 affine from its pixels to ``photo``'s pixels.
    """
    w1, h1 = photo.size
    if size == 224:
        # Short side to 224: the long side becomes round(224 * aspect).
        resized = _resize_long_side(photo, round(size * max(w1 / h1, h1 / w1)))
    else:
        resized = _resize_long_side(photo, size)
    left, top, right, bottom = _crop_box(*resized.size, size, square_ok)
    rgb = np.asarray(resized.crop((left, top, right, bottom)))
    return rgb, _photo_from_map((w1, h1), resized.size, left, top)


def _gather(paths: str | Path | Sequence[str | Path]) -> tuple[list[str], list[dict[str, str]]]:
    """Photo paths to load, and as skipped entries: non-photo files of a folder, and HEIC/HEIF
    photos when pillow-heif is missing (Pillow alone would call them unidentifiable)."""
    if isinstance(paths, (str, Path)) and Path(paths).is_dir():
        folder = Path(paths)
        skipped = [
            {"file": str(folder / n), "reason": "not an image file (unsupported extension)"}
            for n in sorted(os.listdir(folder))
            if not n.startswith(".") and (folder / n).is_file() and not _is_image_name(n)
        ]
        files = list_image_files(folder)
    else:
        files = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
        skipped = []
    if pillow_heif is None:
        skipped += [{"file": f, "reason": _NO_HEIF_READER} for f in files if _is_heif(f)]
        files = [f for f in files if not _is_heif(f)]
    return files, skipped


def _is_heif(path: str) -> bool:
    return path.lower().endswith(HEIF_EXTENSIONS)


def load_images(
    paths: str | Path | Sequence[str | Path], size: int = 512, square_ok: bool = False
) -> tuple[list[LoadedImage], list[dict[str, str]]]:
    """Load photos as the network expects them.

    Args:
        paths: a folder (its photos, sorted by name) or a list of photo paths (kept in order).
        size: 512 (long side 512, crop to multiples of 16) or 224 (224x224 centre crop).
        square_ok: keep square images square at size 512 instead of cropping them to 4:3.

    Returns:
        ``(loaded, skipped)``: the usable photos in input order, and ``{"file", "reason"}`` for each
        unreadable, truncated or non-image file (each also logged as a warning).

    Raises:
        InputError: no usable photo remains, or ``size`` is not supported.
    """
    if size not in (224, 512):
        raise InputError(f"Image size {size} is not supported; use 512 or 224.")
    files, skipped = _gather(paths)
    loaded: list[LoadedImage] = []
    for file in files:
        try:
            photo = _open_oriented(file)
        except _READ_ERRORS as exc:
            skipped.append({"file": file, "reason": f"unreadable or truncated image: {exc}"})
            continue
        rgb, photo_from_map = resize_and_crop(photo, size, square_ok)
        loaded.append(
            LoadedImage(file=file, photo_size=photo.size, photo_from_map=photo_from_map, rgb=rgb)
        )
    for entry in skipped:
        log.warning("Skipping %s: %s", entry["file"], entry["reason"])
    if not loaded:
        where = paths if isinstance(paths, (str, Path)) else f"the {len(files)} given file(s)"
        details = "; ".join(f"{Path(s['file']).name} ({s['reason']})" for s in skipped)
        raise InputError(
            f"No usable photo in {where}: {details or 'no image files found'}. "
            f"Supported formats: {', '.join(IMAGE_EXTENSIONS)}."
        )
    return loaded, skipped


_EXIF_FOCAL_35MM = 41989  # FocalLengthIn35mmFilm, in the Exif IFD
_EXIF_MAKE, _EXIF_MODEL = 271, 272
_FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


def exif_camera(path: str | Path) -> tuple[str, float | None]:
    """The EXIF camera name and focal length in photo pixels (``None`` if EXIF lacks it).

    The focal comes from the 35 mm-equivalent focal length, which is defined on the image
    diagonal, so it does not depend on the EXIF orientation.
    """
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            width, height = img.size
            exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
    except _READ_ERRORS as exc:
        raise InputError(f"Cannot read the photo {path}: {exc}.") from exc
    name = f"{exif.get(_EXIF_MAKE, '')} {exif.get(_EXIF_MODEL, '')}".strip()
    focal_35mm = exif_ifd.get(_EXIF_FOCAL_35MM)
    if not focal_35mm:
        return name, None
    return name, float(focal_35mm) * math.hypot(width, height) / _FULL_FRAME_DIAGONAL_MM


UPRIGHT_FOLDER = "upright"
"""Folder of a result that holds the upright copies of EXIF-rotated photos (and JPEG copies of
HEIC/HEIF photos, which Blender cannot read)."""

_EXIF_ORIENTATION = 0x0112
_TURNED_ORIENTATIONS = range(2, 9)  # 1 is upright; 2-8 mirror and/or rotate (0 and others: invalid)
_JPEG_FORMATS = ("JPEG", "MPO")  # MPO: the multi-picture JPEG some phones write
_FORMATS_BLENDER_CANNOT_READ = ("HEIF",)  # lossy photos: their copy is a JPEG too
_JPEG_QUALITY = 95
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


def write_upright_copies(images: Sequence[ImageResult], result_dir: str | Path) -> None:
    """Write an upright copy of each photo whose EXIF orientation turns it, or that Blender
    cannot read (HEIC/HEIF); set ``display_file``.

    ``photo_size`` and ``K_photo`` describe the EXIF-oriented photo, but Blender loads a file's
    stored pixels as they are, so a phone's portrait photo stored sideways would sit sideways in
    its camera frame; and it has no HEIC reader at all. Photo ``k`` gets
    ``<result_dir>/upright/<k>/<stem>.jpg`` (JPEG and HEIC input: quality 95, 4:4:4, colour
    profile kept) or ``.png`` for other inputs (lossless), and ``display_file`` its absolute path;
    photos Blender can show as they are get ``display_file = None``. A photo that can no longer
    be read keeps its ``display_file`` (logged as a warning: the import then reports it missing
    or shows it as stored).

    Raises:
        OSError: a copy cannot be written (full disk, no permission).
    """
    for k, image in enumerate(images):
        try:
            with Image.open(image.file) as photo:
                turned = photo.getexif().get(_EXIF_ORIENTATION) in _TURNED_ORIENTATIONS
                if not turned and photo.format not in _FORMATS_BLENDER_CANNOT_READ:
                    image.display_file = None
                    continue
                photo.load()
                upright = ImageOps.exif_transpose(photo)
                is_jpeg = photo.format in _JPEG_FORMATS + _FORMATS_BLENDER_CANNOT_READ
                icc_profile = photo.info.get("icc_profile")
        except _READ_ERRORS as exc:
            log.warning("No upright copy of %s (cannot read it: %s)", image.file, exc)
            continue
        folder = Path(result_dir) / UPRIGHT_FOLDER / str(k)
        folder.mkdir(parents=True, exist_ok=True)
        options = {"icc_profile": icc_profile} if icc_profile else {}
        if is_jpeg:
            target = folder / f"{Path(image.file).stem}.jpg"
            # Full-resolution colour (4:4:4): re-encoding with 4:2:0 doubles the error.
            upright.save(target, "JPEG", quality=_JPEG_QUALITY, subsampling=0, **options)
        else:
            target = folder / f"{Path(image.file).stem}.png"
            if upright.mode not in _PNG_MODES:  # e.g. a CMYK TIFF
                upright = upright.convert("RGBA" if "A" in upright.getbands() else "RGB")
            upright.save(target, "PNG", **options)
        image.display_file = str(target.resolve())


def normalize(rgb: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` float32 network input in [-1, 1] from ``(H, W, 3)`` uint8 RGB."""
    x = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return (x - np.float32(0.5)) / np.float32(0.5)
