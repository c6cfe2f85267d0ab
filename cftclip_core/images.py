"""Safe image loading and CLIP preprocessing with Pillow and numpy/torch (no torchvision).

Loading (``load_image``/``decode_image``) accepts only an allowlist of formats, refuses files that
are too large on disk or claim too many pixels (checked from the header, before any pixel is
decoded), applies the EXIF orientation and converts every mode to RGB (alpha composited on
white, as transformers' ``convert_to_rgb`` does).

Preprocessing reproduces ``transformers.CLIPImageProcessor`` (PIL backend): shortest-edge resize
with the size truncated to an int, centre crop with floor offsets (zero padding when the crop is
larger than the image), rescale in float64 then cast to float32, normalise in float32.
``resize_and_crop`` gives the uint8 crop (what ``PixelCache`` stores); ``normalize`` turns a uint8
batch into ``pixel_values``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from cftclip_core.errors import ImageError, ModelError
from cftclip_core.media_store import check_sha256

if TYPE_CHECKING:  # torch is imported where a batch is normalised, so that loading images needs no torch
    import torch

logger = logging.getLogger(__name__)

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# Pillow format name -> file suffix used in the media store. MPO is how Pillow names JPEGs from
# many cameras and phones (JPEG with extra embedded pictures); the first picture is used.
_FORMAT_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
_ALLOWED_HELP = "JPEG, PNG, WEBP, GIF or BMP"
_FIX_CONVERT = f"Convert it to {_ALLOWED_HELP} (e.g. open and re-save it in an image editor) and import it again."
_CHUNK = 1 << 20
# Bump when resize_and_crop changes its output, so that PixelCache entries of older code are not reused.
_PREPROCESS_ALGORITHM_VERSION = 1


@dataclass(frozen=True)
class ImageLimits:
    """What ``load_image`` accepts. Pixels are checked from the header before decoding."""

    max_pixels: int = 40_000_000
    max_bytes: int = 20 * 1024 * 1024
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")

    def __post_init__(self) -> None:
        if self.max_pixels <= 0 or self.max_bytes <= 0:
            raise ValueError("ImageLimits.max_pixels and max_bytes must be positive")
        unknown = set(self.formats) - set(_FORMAT_SUFFIX)
        if unknown:
            raise ValueError(f"unsupported formats in ImageLimits.formats: {sorted(unknown)}")


@dataclass(frozen=True)
class DecodedImage:
    """A fully decoded RGB image and the format it was stored in."""

    image: Image.Image
    format: str  # Pillow format name, e.g. "JPEG"
    suffix: str  # file suffix for that format, e.g. ".jpg"


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sniff_disallowed(head: bytes) -> str | None:
    """Name a well-known non-allowed format from its first bytes, for a helpful message."""
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "a TIFF image"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "an ICO icon"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"8BPS"):
        return "a Photoshop (PSD) file"
    if head[4:8] == b"ftyp":
        return "an HEIC/AVIF/MP4 file"
    text = head.lstrip().lower()
    if text.startswith((b"<svg", b"<?xml")):
        return "an SVG/XML document"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    return None


def _looks_like_allowed(head: bytes) -> bool:
    return (
        head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM"))
        or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited on white (as transformers does)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit greyscale: keep the top 8 bits instead of letting convert() clip at 255.
        img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8))
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(
    source: Path | str | bytes, limits: ImageLimits = ImageLimits(), *, name: str | None = None
) -> DecodedImage:
    """Load an image safely and fully; raise ImageError (saying which, what, how to fix) if not.

    ``source`` is a file path or the raw bytes; ``name`` labels bytes in messages (e.g. a URL).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<uploaded bytes>"
        data = bytes(source)
        if len(data) > limits.max_bytes:
            raise _too_many_bytes(label, len(data), limits)
    else:
        path = Path(source)
        label = name or str(path)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise ImageError(f"Cannot load image {label}: it is not a file. Point the table at an image file.")
            if size > limits.max_bytes:
                raise _too_many_bytes(label, size, limits)
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(
                f"Cannot load image {label}: the file does not exist. Check the path (image paths in a "
                "table are relative to the table file's folder) or add the missing file."
            ) from None
        except PermissionError:
            raise ImageError(
                f"Cannot load image {label}: permission denied. Make the file readable by the user running the app."
            ) from None
    if not data:
        raise ImageError(f"Cannot load image {label}: the file is empty. Replace it with the real image.")

    head = data[:32]
    try:
        img = Image.open(io.BytesIO(data), formats=list(limits.formats))
    except Image.DecompressionBombError:
        raise ImageError(
            f"Cannot load image {label}: its header claims far more pixels than allowed "
            f"({limits.max_pixels:,}), which is how decompression bombs work. Downscale the image "
            "(e.g. to at most 4000 pixels on the long side) or raise ImageLimits.max_pixels."
        ) from None
    except Exception as exc:  # Pillow raises many types on hostile input; none may escape as a crash
        kind = _sniff_disallowed(head)
        if kind is not None:
            raise ImageError(
                f"Cannot load image {label}: it is {kind}, not an allowed format ({_ALLOWED_HELP}). {_FIX_CONVERT}"
            ) from None
        if _looks_like_allowed(head):
            raise ImageError(
                f"Cannot load image {label}: the file is corrupt or its format is not allowed here "
                f"({exc}). Re-export or re-download it as {_ALLOWED_HELP}."
            ) from None
        raise ImageError(
            f"Cannot load image {label}: the content is not an image (whatever the file name says). "
            f"Replace it with a {_ALLOWED_HELP} file."
        ) from None

    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageError(f"Cannot load image {label}: it has no pixels ({width}x{height}). Replace it.")
        if width * height > limits.max_pixels:
            raise ImageError(
                f"Cannot load image {label}: it is {width}x{height} = {width * height:,} pixels, above the "
                f"limit of {limits.max_pixels:,}. Downscale it (e.g. to at most 4000 pixels on the long "
                "side) or raise ImageLimits.max_pixels."
            )
        fmt = img.format or "?"
        allowed = set(limits.formats) | ({"MPO"} if "JPEG" in limits.formats else set())
        if fmt not in allowed:
            raise ImageError(
                f"Cannot load image {label}: its format {fmt} is not allowed ({_ALLOWED_HELP}). {_FIX_CONVERT}"
            )
        try:
            img.load()
        except Exception as exc:
            raise ImageError(
                f"Cannot load image {label}: the {fmt} data is truncated or corrupt ({exc}). "
                "Re-download or re-export the image."
            ) from None
        try:
            ImageOps.exif_transpose(img, in_place=True)
        except Exception as exc:  # broken EXIF must not make an otherwise good picture unusable
            logger.warning("ignoring unreadable EXIF orientation of %s: %s", label, exc)
        return DecodedImage(image=_to_rgb(img), format=fmt, suffix=_FORMAT_SUFFIX[fmt])


def _too_many_bytes(label: str, size: int, limits: ImageLimits) -> ImageError:
    return ImageError(
        f"Cannot load image {label}: it is {size:,} bytes, above the limit of {limits.max_bytes:,}. "
        "Re-save it smaller (e.g. JPEG quality 90, at most 4000 pixels on the long side) or raise "
        "ImageLimits.max_bytes."
    )


def load_image(
    source: Path | str | bytes, limits: ImageLimits = ImageLimits(), *, name: str | None = None
) -> Image.Image:
    """Load an image safely as RGB (see ``decode_image``)."""
    return decode_image(source, limits, name=name).image


@dataclass(frozen=True)
class PreprocessConfig:
    """CLIP image preprocessing: shortest-edge resize, centre crop, rescale, normalise.

    ``crop=None`` means no centre crop. ``resample`` is a Pillow resampling filter number
    (3 = bicubic), as stored in Hugging Face ``preprocessor_config.json``.
    """

    size: int = 224
    crop: int | None = 224
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    resample: int = int(Image.Resampling.BICUBIC)
    rescale_factor: float = 1 / 255

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "resample", int(self.resample))
        if self.size <= 0 or (self.crop is not None and self.crop <= 0):
            raise ValueError(f"size and crop must be positive, got size={self.size}, crop={self.crop}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0; got mean={self.mean}, std={self.std}")
        if self.resample not in {int(r) for r in Image.Resampling}:
            raise ValueError(f"unknown Pillow resampling filter {self.resample}")

    def fingerprint(self) -> str:
        """Short stable hash of everything that changes the uint8 crop (for cache keys)."""
        payload = {
            "algorithm": _PREPROCESS_ALGORITHM_VERSION,
            "size": self.size,
            "crop": self.crop,
            "resample": self.resample,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], source: str = "image processor config") -> PreprocessConfig:
        """Build from a Hugging Face CLIPImageProcessor config (``preprocessor_config.json`` contents)."""

        def unsupported(what: str) -> ModelError:
            return ModelError(
                f"The image preprocessing in {source} is not supported: {what}. CFT-CLIP Studio "
                "reproduces CLIP's shortest-edge resize + square centre crop; use a CLIP checkpoint "
                "or fix its preprocessor_config.json."
            )

        if not config.get("do_resize", True):
            raise unsupported("do_resize is false")
        size = config.get("size", 224)
        if isinstance(size, Mapping):
            if set(k for k, v in size.items() if v is not None) != {"shortest_edge"}:
                raise unsupported(f"size {dict(size)} (only {{'shortest_edge': N}} is supported)")
            size = size["shortest_edge"]
        crop: int | None = None
        if config.get("do_center_crop", True):
            crop_size = config.get("crop_size", 224)
            if isinstance(crop_size, Mapping):
                if crop_size.get("height") != crop_size.get("width"):
                    raise unsupported(f"non-square crop_size {dict(crop_size)}")
                crop_size = crop_size.get("height")
            crop = crop_size
        normalize_on = config.get("do_normalize", True)
        try:
            return cls(
                size=int(size),
                crop=None if crop is None else int(crop),
                mean=tuple(config.get("image_mean", CLIP_MEAN)) if normalize_on else (0.0, 0.0, 0.0),
                std=tuple(config.get("image_std", CLIP_STD)) if normalize_on else (1.0, 1.0, 1.0),
                resample=int(config.get("resample", Image.Resampling.BICUBIC)),
                rescale_factor=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0,
            )
        except (TypeError, ValueError) as exc:
            raise unsupported(str(exc)) from None

    @classmethod
    def from_pretrained_dir(cls, path: Path | str) -> PreprocessConfig:
        """Read ``preprocessor_config.json`` from a model directory saved with ``save_pretrained``."""
        file = Path(path) / "preprocessor_config.json"
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(
                f"No preprocessor_config.json in {path}. Save the processor next to the model "
                "(CLIPProcessor.save_pretrained(path)) or use the default CLIP preprocessing (PreprocessConfig())."
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"Cannot read {file}: {exc}. Restore the file from the original checkpoint.") from None
        if not isinstance(config, dict):
            raise ModelError(f"{file} is not a JSON object. Restore the file from the original checkpoint.")
        return cls.from_dict(config, source=str(file))

    @classmethod
    def from_image_processor(cls, processor: Any) -> PreprocessConfig:
        """From a transformers image processor, or a processor holding one (``.image_processor``)."""
        image_processor = getattr(processor, "image_processor", processor)
        return cls.from_dict(image_processor.to_dict(), source=type(image_processor).__name__)


def _resize_shape(width: int, height: int, shortest_edge: int) -> tuple[int, int]:
    """(new_width, new_height): short side -> shortest_edge, long side scaled and truncated (as transformers)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _center_crop(arr: np.ndarray, crop: int) -> np.ndarray:
    height, width = arr.shape[:2]
    top, left = (height - crop) // 2, (width - crop) // 2
    if top >= 0 and left >= 0:
        return arr[top : top + crop, left : left + crop]
    # Crop larger than the image: centre it on a black canvas first (what transformers does).
    canvas_h, canvas_w = max(crop, height), max(crop, width)
    pad_top, pad_left = math.ceil((canvas_h - height) / 2), math.ceil((canvas_w - width) / 2)
    canvas = np.zeros((canvas_h, canvas_w, 3), dtype=arr.dtype)
    canvas[pad_top : pad_top + height, pad_left : pad_left + width] = arr
    top, left = top + pad_top, left + pad_left
    return canvas[max(0, top) : min(canvas_h, top + crop), max(0, left) : min(canvas_w, left + crop)]


def resize_and_crop(img: Image.Image, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Resize (shortest edge) and centre-crop an image; uint8 array HxWx3."""
    if img.mode != "RGB":
        img = _to_rgb(img)
    new_w, new_h = _resize_shape(img.width, img.height, cfg.size)
    arr = np.array(img.resize((new_w, new_h), resample=Image.Resampling(cfg.resample)))
    if cfg.crop is not None:
        arr = _center_crop(arr, cfg.crop)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def normalize(batch: torch.Tensor | np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> torch.Tensor:
    """uint8 batch NxHxWx3 -> float32 ``pixel_values`` Nx3xHxW on the batch's device.

    Uses a 256-entry table per channel computed exactly as transformers does (x * rescale in
    float64, cast to float32, then (x - mean) / std in float32), so results match bit for bit.
    """
    import torch

    x = torch.as_tensor(batch)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected a uint8 batch NxHxWx3, got {tuple(x.shape)} {x.dtype}")
    levels = (torch.arange(256, dtype=torch.float64) * cfg.rescale_factor).to(torch.float32)
    mean = torch.tensor(cfg.mean, dtype=torch.float32)[:, None]
    std = torch.tensor(cfg.std, dtype=torch.float32)[:, None]
    table = ((levels[None, :] - mean) / std).to(x.device)  # 3 x 256
    return torch.stack([table[c][x[..., c].long()] for c in range(3)], dim=1)


class PixelCache:
    """uint8 crops on disk as ``.npy``, keyed by image content hash AND preprocessing fingerprint.

    Layout: ``root/<cfg fingerprint>/<sha[:2]>/<sha[2:]>.npy``; a different config never reads
    another config's entries. Files are loaded with ``allow_pickle=False``; an unreadable or
    wrongly shaped file is recomputed and overwritten rather than trusted.
    """

    def __init__(self, root: Path, cfg: PreprocessConfig = PreprocessConfig()) -> None:
        self.cfg = cfg
        self.dir = Path(root) / cfg.fingerprint()

    def path_for(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.dir / sha256[:2] / f"{sha256[2:]}.npy"

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception as exc:  # truncated/garbled file: recompute
            logger.warning("pixel cache file %s is unreadable (%s); recomputing", path, exc)
            return None
        crop = self.cfg.crop
        shape_ok = arr.ndim == 3 and arr.shape[2] == 3 and (crop is None or arr.shape[:2] == (crop, crop))
        if arr.dtype != np.uint8 or not shape_ok:
            logger.warning("pixel cache file %s has shape %s %s; recomputing", path, arr.shape, arr.dtype)
            return None
        return arr

    def get_or_compute(self, sha256: str, loader: Callable[[], Image.Image]) -> np.ndarray:
        """Cached crop for ``sha256``; otherwise ``resize_and_crop(loader())``, stored atomically."""
        path = self.path_for(sha256)
        cached = self._read(path)
        if cached is not None:
            return cached
        arr = resize_and_crop(loader(), self.cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return arr
