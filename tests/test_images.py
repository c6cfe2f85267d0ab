"""Safe image loading, CLIP preprocessing equivalence with transformers, and the pixel cache."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cftclip_core.errors import ImageError, ModelError
from cftclip_core.formats import read_table
from cftclip_core.images import (
    ImageLimits,
    PixelCache,
    PreprocessConfig,
    decode_image,
    load_image,
    normalize,
    resize_and_crop,
    sha256_file,
)
from cftclip_core.media_store import MediaStore
from cftclip_core.table_images import check_table_images


def noisy_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Gradients plus noise: enough structure that resize/crop mistakes change the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) * 255 / (width + height)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (its pixel data is absent)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- bad inputs


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "photo.jpg"
    with pytest.raises(ImageError, match="does not exist") as info:
        load_image(missing)
    assert str(missing) in str(info.value)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    data = encode(noisy_image(300, 200), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt") as info:
        load_image(path)
    assert "cut.jpg" in str(info.value)


def test_jpeg_magic_followed_by_garbage_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    with pytest.raises(ImageError, match="corrupt"):
        load_image(path)


def test_huge_png_header_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20_000, 20_000))
    assert path.stat().st_size < 200
    with pytest.raises(ImageError, match="pixels") as info:
        load_image(path)
    message = str(info.value)
    assert "bomb.png" in message and "Downscale" in message


def test_pixel_limit_is_checked_from_the_header(tmp_path: Path) -> None:
    # 48 Mpx: under Pillow's own bomb limit, over ours. The file has no pixel data, so a
    # "truncated" error would mean the pixels were decoded before the size check.
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(8000, 6000))
    with pytest.raises(ImageError, match=r"8000x6000 = 48,000,000 pixels, above the limit of 40,000,000"):
        load_image(path)


def test_custom_pixel_and_byte_limits(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    path.write_bytes(encode(noisy_image(20, 20), "PNG"))
    with pytest.raises(ImageError, match="400 pixels"):
        load_image(path, ImageLimits(max_pixels=100))
    with pytest.raises(ImageError, match="bytes, above the limit of 100"):
        load_image(path, ImageLimits(max_bytes=100))


def test_text_file_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "article.jpg"
    path.write_text("Breaking news: this is not a picture.\n" * 5)
    with pytest.raises(ImageError, match="not an image") as info:
        load_image(path)
    assert "article.jpg" in str(info.value)


def test_html_page_saved_as_image_is_named(tmp_path: Path) -> None:
    path = tmp_path / "thumb.png"
    path.write_bytes(b"<!DOCTYPE html><html><body>404</body></html>")
    with pytest.raises(ImageError, match="HTML page"):
        load_image(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(path)


@pytest.mark.parametrize(("fmt", "kind"), [("TIFF", "TIFF"), ("ICO", "ICO")])
def test_disallowed_formats_are_refused_with_a_fix(tmp_path: Path, fmt: str, kind: str) -> None:
    path = tmp_path / f"picture.{fmt.lower()}"
    path.write_bytes(encode(noisy_image(32, 32), fmt))
    with pytest.raises(ImageError, match=kind) as info:
        load_image(path)
    assert "Convert it to JPEG, PNG" in str(info.value)


def test_format_allowlist_can_be_narrowed() -> None:
    data = encode(noisy_image(16, 16), "JPEG")
    with pytest.raises(ImageError, match="not allowed"):
        load_image(data, ImageLimits(formats=("PNG",)), name="upload.jpg")


def test_bytes_source_is_labelled_by_name() -> None:
    with pytest.raises(ImageError, match="https://example.org/a.jpg"):
        load_image(b"not an image at all", name="https://example.org/a.jpg")


# ---------------------------------------------------------------- good inputs


@pytest.mark.parametrize(
    ("fmt", "suffix"), [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("GIF", ".gif"), ("BMP", ".bmp")]
)
def test_allowed_formats_decode_to_rgb(fmt: str, suffix: str) -> None:
    decoded = decode_image(encode(noisy_image(40, 30), fmt))
    assert (decoded.format, decoded.suffix) == (fmt, suffix)
    assert decoded.image.mode == "RGB" and decoded.image.size == (40, 30)


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red-ish everywhere
    rgba[:, :5, 3] = 255  # left half opaque, right half fully transparent
    rgba[0, 0, 3] = 128  # one half-transparent pixel
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    out = np.asarray(load_image(path))
    assert out[5, 2].tolist() == [200, 0, 0]
    assert out[5, 8].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [227, 127, 127]  # halfway between red-ish and white


def test_palette_with_transparency_and_grey_and_cmyk(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    pal.putpixel((3, 3), 1)
    pal.info["transparency"] = 0  # palette entry 0 (blue) is transparent
    out = np.asarray(load_image(encode(pal, "PNG")))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[3, 3].tolist() == [0, 255, 0]

    grey = np.asarray(load_image(encode(Image.new("L", (3, 3), 77), "PNG")))
    assert grey.shape == (3, 3, 3) and (grey == 77).all()

    cmyk = load_image(encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"))
    assert cmyk.mode == "RGB"
    assert np.asarray(cmyk).min() > 240  # no ink = white


def test_16_bit_grey_keeps_its_range() -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = np.asarray(load_image(encode(Image.fromarray(values), "PNG")))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img = load_image(encode(Image.fromarray(arr), "PNG", exif=exif.tobytes()))
    assert img.size == (20, 40)
    out = np.asarray(img)
    assert out[5, 10].tolist() == [255, 0, 0]  # the left half is now on top
    assert out[35, 10].tolist() == [0, 0, 255]


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert np.asarray(load_image(buf.getvalue()))[4, 4].tolist() == [255, 0, 0]


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 10_000
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- CLIP preprocessing


@pytest.fixture(scope="module")
def hf_processor():
    transformers = pytest.importorskip("transformers")
    try:  # transformers 5 names the PIL (no torchvision) processor explicitly
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as cls
    except ImportError:
        cls = transformers.CLIPImageProcessor
    return cls


def ours(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    return normalize(torch.from_numpy(resize_and_crop(img, cfg)[None]), cfg).numpy()


SIZES = [(640, 480), (479, 1021), (1021, 479), (50, 50), (224, 224), (225, 224), (300, 7), (1, 300)]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_matches_clip_image_processor(hf_processor, width: int, height: int) -> None:
    processor = hf_processor()
    img = noisy_image(width, height, seed=width * 7 + height)
    expected = processor(images=img, return_tensors="np")["pixel_values"]
    got = ours(img, PreprocessConfig.from_image_processor(processor))
    assert got.shape == expected.shape == (1, 3, 224, 224)
    assert np.abs(got - expected).max() <= 1e-6


def test_matches_processor_with_crop_larger_than_resize_and_alpha(hf_processor) -> None:
    processor = hf_processor(size={"shortest_edge": 200}, crop_size={"height": 224, "width": 224})
    cfg = PreprocessConfig.from_image_processor(processor)
    assert (cfg.size, cfg.crop) == (200, 224)
    rgba = noisy_image(333, 250).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 333).astype(np.uint8), (250, 1))))
    expected = processor(images=rgba, return_tensors="np")["pixel_values"]
    assert np.abs(ours(rgba, cfg) - expected).max() <= 1e-6


def test_config_round_trips_through_a_saved_directory(hf_processor, tmp_path: Path) -> None:
    processor = hf_processor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor.save_pretrained(tmp_path)
    cfg = PreprocessConfig.from_pretrained_dir(tmp_path)
    assert cfg == PreprocessConfig.from_image_processor(processor)
    assert (cfg.size, cfg.crop) == (336, 336)


def test_config_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="preprocessor_config.json"):
        PreprocessConfig.from_pretrained_dir(tmp_path)
    with pytest.raises(ModelError, match="not supported"):
        PreprocessConfig.from_dict({"size": {"height": 224, "width": 300}})


def test_normalize_batch_shape_and_values() -> None:
    batch = torch.zeros((2, 4, 5, 3), dtype=torch.uint8)
    batch[1] = 255
    out = normalize(batch)
    assert out.shape == (2, 3, 4, 5) and out.dtype == torch.float32
    assert torch.allclose(out[0, 0], torch.tensor(-0.48145466 / 0.26862954))
    assert torch.allclose(out[1, 2], torch.tensor((1 - 0.40821073) / 0.27577711))
    with pytest.raises(ValueError):
        normalize(batch.float())


# ---------------------------------------------------------------- pixel cache


def test_pixel_cache_reuses_entries_and_separates_configs(tmp_path: Path) -> None:
    img = noisy_image(320, 240)
    sha = hashlib.sha256(b"image-1").hexdigest()
    calls = []

    def loader() -> Image.Image:
        calls.append(1)
        return img

    small = PixelCache(tmp_path, PreprocessConfig())
    first = small.get_or_compute(sha, loader)
    again = PixelCache(tmp_path, PreprocessConfig()).get_or_compute(sha, loader)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, resize_and_crop(img))

    large = PixelCache(tmp_path, PreprocessConfig(size=256, crop=256)).get_or_compute(sha, loader)
    assert len(calls) == 2 and large.shape == (256, 256, 3)
    # normalisation constants do not change the uint8 crop, so they share entries
    PixelCache(tmp_path, PreprocessConfig(mean=(0.5, 0.5, 0.5))).get_or_compute(sha, loader)
    assert len(calls) == 2


def test_corrupt_pixel_cache_file_is_recomputed(tmp_path: Path) -> None:
    sha = hashlib.sha256(b"image-2").hexdigest()
    cache = PixelCache(tmp_path)
    expected = cache.get_or_compute(sha, lambda: noisy_image(100, 80))
    path = cache.path_for(sha)
    path.write_bytes(path.read_bytes()[:50])
    np.testing.assert_array_equal(cache.get_or_compute(sha, lambda: noisy_image(100, 80)), expected)
    np.save(path, np.zeros((5, 5, 3), dtype=np.uint8))  # readable but wrong shape
    np.testing.assert_array_equal(cache.get_or_compute(sha, lambda: noisy_image(100, 80)), expected)
    assert np.load(path).shape == (224, 224, 3)


# ---------------------------------------------------------------- checking a table's images


def test_table_images_are_all_checked_before_use(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    png = encode(noisy_image(40, 30), "PNG")
    (tmp_path / "img" / "photo.jpg").write_bytes(png)  # a PNG under a .jpg name is fine: the content decides
    (tmp_path / "img" / "cut.jpg").write_bytes(encode(noisy_image(200, 150), "JPEG")[:600])
    (tmp_path / "img" / "bomb.png").write_bytes(png_header_only(20_000, 20_000))
    rows = [("a", "img/photo.jpg"), ("b", "img/cut.jpg"), ("c", "img/photo.jpg"), ("d", "img/bomb.png")]
    frame = pd.DataFrame([{"id": i, "image": image, "title": "t", "summary": "s"} for i, image in rows])
    frame.to_csv(tmp_path / "t.csv", index=False)
    calls: list[tuple[str, int, int]] = []

    check = check_table_images(read_table(tmp_path / "t.csv"), MediaStore(tmp_path / "media"),
                               progress=lambda *call: calls.append(call))

    assert [(p.row, p.column) for p in check.problems] == [(2, "image"), (4, "image")] and check.bad_ids == {"b", "d"}
    assert "corrupt" in check.problems[0].reason and "pixels" in check.problems[1].reason
    assert list(check.ok) == ["a", "c"] and check.ok["a"] == check.ok["c"]
    good = check.ok["a"]
    assert (good.suffix, good.width, good.height) == (".png", 40, 30)
    assert good.sha256 == hashlib.sha256(png).hexdigest() and good.path == tmp_path / "img" / "photo.jpg"
    assert calls[-1] == ("checking images", 3, 3)  # each distinct file once
    assert not any((tmp_path / "media").rglob("*.*"))  # local files are only read
