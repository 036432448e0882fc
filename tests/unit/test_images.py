import base64
import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from outlines.inputs import Image
from PIL import Image as PILImage
from PIL import ImageCms

from outlines_lmstudio import _images
from outlines_lmstudio._images import image_from_bytes, normalise_image
from outlines_lmstudio.errors import InvalidImageError


def encoded(fmt: str, size: tuple[int, int] = (4, 3), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    PILImage.new(mode, size, "red" if mode == "RGB" else 1).save(buffer, format=fmt)
    return buffer.getvalue()


def opened(data: bytes) -> PILImage.Image:
    return PILImage.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_accepted_formats_keep_their_bytes(fmt: str, mime: str) -> None:
    data = encoded(fmt)
    image = normalise_image(Image(opened(data)))
    assert image.mime == mime
    loaded = opened(data)
    loaded.load()  # as an Outlines Image leaves it (a lazy one: see the WebP tests below)
    assert image.data == normalise_image(loaded).data  # as its PIL image is sent
    assert image.digest == hashlib.sha256(image.data).hexdigest()
    assert image.name.endswith("." + mime.split("/")[1])


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF"])
def test_other_formats_are_reencoded_as_png(fmt: str) -> None:
    image = normalise_image(Image(opened(encoded(fmt))))
    assert image.mime == "image/png"
    with PILImage.open(io.BytesIO(image.data)) as decoded:
        assert decoded.format == "PNG"
        assert decoded.size == (4, 3)


def test_animated_images_are_refused_not_cut() -> None:
    frames = [PILImage.new("RGB", (4, 4), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImageError, match="animated"):
        image_from_bytes(buffer.getvalue())


def test_not_an_image() -> None:
    with pytest.raises(InvalidImageError, match="not an image"):
        image_from_bytes(b"hello, not a picture")
    with pytest.raises(InvalidImageError, match="empty"):
        image_from_bytes(b"")


def test_truncated_png_is_refused() -> None:
    with pytest.raises(InvalidImageError):
        image_from_bytes(encoded("PNG", (64, 64))[:60])


def test_too_many_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_images, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(InvalidImageError, match="pixels"):
        image_from_bytes(encoded("PNG", (4, 3)))


def test_too_many_pixels_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lazily opened PIL image over the limit is refused from its header, not decoded."""
    monkeypatch.setattr(_images, "MAX_IMAGE_PIXELS", 10)
    lazy = PILImage.open(io.BytesIO(encoded("PNG", (4, 3))))
    assert lazy.tile  # not decoded yet
    with pytest.raises(InvalidImageError, match="pixels"):
        normalise_image(lazy)
    assert lazy.tile  # still not decoded: a 170 MP file would not take its memory first


def test_too_many_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_images, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(InvalidImageError, match="MiB"):
        image_from_bytes(encoded("PNG"))


def test_pil_images_are_accepted_directly() -> None:
    image = normalise_image(PILImage.new("RGB", (2, 2), "blue"))
    assert image.mime == "image/png"


def test_wrong_object() -> None:
    with pytest.raises(InvalidImageError, match="Expected"):
        normalise_image("cat.png")


# -- issue 13: stills, modes, honest refusals; issue 14: reuse -------------------------

import gc  # noqa: E402

from PIL import ImageDraw  # noqa: E402

from outlines_lmstudio._images import IMAGES, ImageCache, ImageData  # noqa: E402


def mpo_bytes() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 6), "red").save(
        buffer, format="MPO", save_all=True, append_images=[PILImage.new("RGB", (4, 3), "blue")]
    )
    return buffer.getvalue()


def test_mpo_is_a_still_sent_as_its_jpeg_bytes() -> None:
    data = mpo_bytes()
    assert getattr(opened(data), "n_frames", 1) == 2  # what used to be called "animated"
    image = image_from_bytes(data)
    assert (image.mime, image.data) == ("image/jpeg", data)
    via_outlines = normalise_image(Image(opened(data)))
    assert via_outlines.mime == "image/jpeg"
    via_pil = normalise_image(opened(data))
    assert via_pil.mime == "image/jpeg"
    assert opened(via_pil.data).size == (8, 6)


def test_refusals_say_what_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [PILImage.new("RGB", (4, 4), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])  # APNG
    with pytest.raises(InvalidImageError, match=r"^Image is animated \(2 frames\)"):
        image_from_bytes(buffer.getvalue())
    monkeypatch.setattr(_images, "MAX_IMAGE_PIXELS", 10)
    for fmt in ("PNG", "JPEG", "BMP"):
        with pytest.raises(InvalidImageError, match=r"^Image is 4x3 pixels"):
            image_from_bytes(encoded(fmt))


@pytest.mark.parametrize("mode", ["LA", "RGBA", "PA"])
def test_alpha_images_labelled_jpeg_become_png(mode: str) -> None:
    picture = PILImage.new("RGBA", (4, 3), (1, 2, 3, 4))
    picture = picture.convert("P").convert("PA") if mode == "PA" else picture.convert(mode)
    picture.format = "JPEG"
    image = normalise_image(picture)
    assert image.mime == "image/png"
    assert opened(image.data).mode in (mode, "RGBA")


def test_32_bit_integer_images_are_sent_as_16_bit_png() -> None:
    """Mode ``I`` (a 32-bit TIFF, ``convert("I")``): Pillow 13 writes no such PNG."""
    picture = PILImage.new("I", (4, 3), 1000)
    buffer = io.BytesIO()
    picture.save(buffer, format="TIFF")
    for image in (normalise_image(picture), normalise_image(Image(opened(buffer.getvalue())))):
        assert image.mime == "image/png"
        with opened(image.data) as decoded:
            assert decoded.mode == "I;16"
            assert decoded.getpixel((1, 1)) == 1000


@pytest.mark.parametrize("value", [70000, -5])
def test_32_bit_values_16_bit_png_cannot_hold_are_refused(value: int) -> None:
    """They were clamped to 0..65535 without a word (found by a probe)."""
    picture = PILImage.new("I", (4, 3), 1000)
    picture.putpixel((2, 1), value)
    with pytest.raises(InvalidImageError, match=f"values from {min(value, 1000)} to"):
        normalise_image(picture)


def test_a_webp_image_keeps_its_pixels() -> None:
    """Found by a probe: a PIL WebP image was written again with Pillow's default, lossy
    quality 80 (pixels off by up to 234); JPEG already kept its quantisation."""
    noise = PILImage.frombytes("RGB", (32, 32), os.urandom(32 * 32 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="WEBP", lossless=True)
    with opened(buffer.getvalue()) as picture:
        picture.load()
        image = normalise_image(picture)
        with opened(image.data) as decoded:
            assert image.mime == "image/webp"
            assert decoded.convert("RGB").tobytes() == picture.convert("RGB").tobytes()


def _lossy_webp(path: Path, size: tuple[int, int] = (64, 48)) -> bytes:
    PILImage.effect_noise(size, 40).convert("RGB").save(path, format="WEBP", quality=60)
    return path.read_bytes()


def test_a_lossy_webp_file_is_sent_as_it_is(tmp_path: Path) -> None:
    """Found by a probe: a PIL image of a lossy WebP photo was written again losslessly, ten
    times its file's size (a 9.4 MiB photo refused as "47.3 MiB after encoding"). Its
    pixels unchanged, the file is sent as it is, as the SDK sends a file; in an Outlines
    ``Image`` too."""
    data = _lossy_webp(tmp_path / "photo.webp")
    with PILImage.open(tmp_path / "photo.webp") as picture:
        sent = normalise_image(picture)
        assert (sent.mime, sent.data) == ("image/webp", data)
        assert normalise_image(Image(picture)).data == data


def test_a_lossy_webp_opened_from_memory_is_sent_as_its_bytes(tmp_path: Path) -> None:
    """Found by a probe: ``Image.open(io.BytesIO(data))`` (an upload, a download) has no
    file name, and a lossy WebP opened so was written again losslessly, nine times larger.
    The file object's bytes are sent, and left where they were read from."""
    data = _lossy_webp(tmp_path / "photo.webp")
    source = io.BytesIO(data)
    with PILImage.open(source) as picture:
        at = source.tell()
        sent = normalise_image(picture)
        assert source.tell() == at
        assert (sent.mime, sent.data) == ("image/webp", data)
    with PILImage.open(io.BytesIO(data)) as picture:
        picture.load()  # Pillow lets go of the file object: written again, its pixels kept
        picture.putpixel((3, 3), (1, 2, 3))
        with opened(normalise_image(picture).data) as decoded:
            assert decoded.tobytes() == picture.tobytes()


def test_a_webp_image_changed_since_its_file_keeps_its_own_pixels(tmp_path: Path) -> None:
    """Changed in place, or its file rewritten since: its own pixels, losslessly."""
    path = tmp_path / "photo.webp"
    data = _lossy_webp(path)
    with PILImage.open(path) as picture:
        picture.load()
        picture.putpixel((3, 3), (1, 2, 3))
        sent = normalise_image(picture)
        assert sent.data != data
        with opened(sent.data) as decoded:
            assert decoded.tobytes() == picture.tobytes()
    with PILImage.open(path) as picture:
        picture.load()
        _lossy_webp(path)  # another noise, the same size
        with opened(normalise_image(picture).data) as decoded:
            assert decoded.tobytes() == picture.tobytes()


@pytest.mark.parametrize("removed", ["exif", "icc_profile"])
def test_metadata_removed_from_a_webp_image_is_not_sent_with_its_file(
    tmp_path: Path, removed: str
) -> None:
    """Found by a review: ``del image.info["exif"]`` (a GPS position) left the pixels as the
    file's, and the file went out with it."""
    path = tmp_path / "photo.webp"
    exif = PILImage.Exif()
    exif[0x010E] = "a description"
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    picture = PILImage.effect_noise((64, 48), 40).convert("RGB")
    picture.save(path, quality=60, exif=exif, icc_profile=profile)
    with PILImage.open(path) as opened:
        assert normalise_image(opened).data == path.read_bytes()
    with PILImage.open(path) as opened:
        del opened.info[removed]
        sent = normalise_image(opened)
        with PILImage.open(io.BytesIO(sent.data)) as decoded:
            assert removed not in decoded.info
            assert decoded.info.keys() & {"exif", "icc_profile"}  # the other one is kept


def test_a_webp_image_named_after_a_pipe_does_not_wait_for_it(tmp_path: Path) -> None:
    """Found by a review: the file was opened again with no check, and a named pipe's open()
    waits for a writer: forever."""
    data = _lossy_webp(tmp_path / "photo.webp")
    os.mkfifo(tmp_path / "pipe.webp")
    with PILImage.open(io.BytesIO(data)) as picture:
        picture.load()
        picture.filename = str(tmp_path / "pipe.webp")
        done: list[bytes] = []
        worker = threading.Thread(target=lambda: done.append(normalise_image(picture).data))
        worker.start()
        worker.join(10)
        in_time = bool(done)
        if not in_time:  # let the worker go: open() returns once a writer comes
            with open(tmp_path / "pipe.webp", "wb"):
                pass
            worker.join(10)
        assert in_time, "normalise_image waited for the pipe"
        with opened(done[0]) as decoded:
            assert decoded.tobytes() == picture.tobytes()


def test_a_sideways_webp_file_is_sent_turned_not_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "sideways.webp"
    exif = PILImage.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    PILImage.effect_noise((64, 48), 40).convert("RGB").save(path, quality=60, exif=exif)
    with PILImage.open(path) as picture:
        sent = normalise_image(picture)
        assert sent.data != path.read_bytes()
        with opened(sent.data) as decoded:
            assert decoded.size == (48, 64)


def test_a_size_refusal_says_how_the_image_was_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a probe: a 5.8 MiB AVIF photo was refused as "55.0 MiB after encoding",
    with no word of the PNG it was written as."""
    monkeypatch.setattr(_images, "MAX_IMAGE_BYTES", 100)
    noise = PILImage.frombytes("RGB", (16, 16), os.urandom(16 * 16 * 3))
    noise.format = "BMP"
    with pytest.raises(InvalidImageError, match=r"the BMP image written as PNG, losslessly"):
        normalise_image(noise)


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (0.0, 255.0), (-3.5, 1000.0)])
def test_floating_point_images_are_refused(low: float, high: float) -> None:
    """Found by a probe: a mode ``F`` image (0..1, as numpy arrays often are) was clipped
    and rounded down into RGB, so sent all black."""
    picture = PILImage.new("F", (4, 3), low)
    picture.putpixel((1, 1), high)
    with pytest.raises(InvalidImageError, match=f"mode F, from {low:g} to {high:g}.*uint8"):
        normalise_image(picture)


@pytest.mark.parametrize("mode", ["RGBa", "La"])
def test_premultiplied_alpha_is_kept(mode: str) -> None:
    """``RGBa`` lost its alpha (converted to RGB); ``La`` was refused (no La to RGB)."""
    straight = mode[:-1] + "A"
    picture = PILImage.new("RGBA", (4, 3), (200, 100, 50, 0)).convert(straight).convert(mode)
    image = normalise_image(picture)
    assert image.mime == "image/png"
    with opened(image.data) as decoded:
        assert decoded.mode == straight
        pixel = decoded.getpixel((1, 1))
        assert isinstance(pixel, tuple)
        assert pixel[-1] == 0  # still transparent


def test_big_endian_16_bit_images_keep_their_values() -> None:
    """A big-endian 16-bit TIFF opens as ``I;16B``: it was converted to RGB, clipped at 255."""
    buffer = io.BytesIO()
    PILImage.new("I;16B", (4, 3), 1000).save(buffer, format="TIFF")
    for image in (opened(buffer.getvalue()), Image(opened(buffer.getvalue()))):
        data = normalise_image(image)
        with opened(data.data) as decoded:
            assert (data.mime, decoded.mode) == ("image/png", "I;16")
            assert decoded.getpixel((1, 1)) == 1000


def test_gif_closed_by_its_with_block(tmp_path: Path) -> None:
    """Its frames cannot be counted any more: our error saying why, not Pillow's ValueError."""
    path = tmp_path / "still.gif"
    PILImage.new("RGB", (4, 3), "red").save(path)
    with PILImage.open(path) as picture:
        image = Image(picture)
    with pytest.raises(InvalidImageError, match=r"Cannot tell whether .* is animated"):
        normalise_image(image)
    with PILImage.open(path) as picture:
        picture.load()  # what the closed-file error advises: the frames still need the file
    with pytest.raises(InvalidImageError, match=r"Cannot tell whether .* is animated"):
        normalise_image(picture)
    picture = PILImage.open(path)  # kept open while it is used
    assert normalise_image(Image(picture)).mime == "image/png"
    picture.close()


def test_jpeg_pil_image_keeps_its_quantisation() -> None:
    buffer = io.BytesIO()
    PILImage.effect_noise((32, 32), 40).convert("RGB").save(buffer, format="JPEG", quality=30)
    image = normalise_image(opened(buffer.getvalue()))
    assert image.mime == "image/jpeg"
    assert getattr(opened(image.data), "quantization", None) == getattr(
        opened(buffer.getvalue()), "quantization", None
    )


def test_outlines_image_without_data() -> None:
    image = Image(opened(encoded("PNG")))
    image.image = None  # type: ignore[assignment]
    image.image_str = None  # type: ignore[assignment]
    with pytest.raises(InvalidImageError, match="holds no image data"):
        normalise_image(image)


def test_outlines_image_is_normalised_once_per_image_str_and_image() -> None:
    image = Image(opened(encoded("PNG", (5, 5))))
    first = normalise_image(image)
    assert normalise_image(image) is first  # no decode, verify or hash again
    image.image = opened(encoded("JPEG", (6, 6)))  # a JPEG is sent from its PIL image
    second = normalise_image(image)
    assert second is not first
    assert opened(second.data).size == (6, 6)
    image.image = None  # type: ignore[assignment]
    image.image_str = base64.b64encode(encoded("PNG", (7, 7))).decode()
    assert opened(normalise_image(image).data).size == (7, 7)


def test_pil_image_changed_in_place_is_normalised_again() -> None:
    picture = PILImage.new("RGB", (8, 8), "white")
    first = normalise_image(picture)
    assert normalise_image(picture) is first
    ImageDraw.Draw(picture).point((1, 1), fill="black")  # same object, same size, new pixels
    second = normalise_image(picture)
    assert second.digest != first.digest


def test_cache_entries_go_with_their_image() -> None:
    image = Image(opened(encoded("PNG", (7, 7))))
    normalise_image(image)
    key = id(image)
    assert key in IMAGES._entries
    del image
    gc.collect()
    assert key not in IMAGES._entries


def test_cache_keeps_to_its_byte_budget() -> None:
    cache = ImageCache(max_bytes=10)
    images = [Image(opened(encoded("PNG"))) for _ in range(3)]
    for image in images:
        cache.put(image, (image.image_str,), ImageData(b"123456", "image/png", "d"))
    assert len(cache) == 1
    assert cache.get(images[-1], (images[-1].image_str,)) is not None
    assert cache.get(images[0], (images[0].image_str,)) is None
    cache.clear()
    assert len(cache) == 0


# -- probe-inputs: PIL images whose pixels cannot be read; state beyond the pixels ----------


def _left_with_block(fmt: str) -> PILImage.Image:
    """An image opened lazily in a ``with`` block and used after it (its file is closed)."""
    with PILImage.open(io.BytesIO(encoded(fmt, (16, 16)))) as image:
        pass
    return image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_pil_image_used_after_its_with_block_is_refused_clearly(fmt: str) -> None:
    with pytest.raises(InvalidImageError, match=r"cannot be read.*with block"):
        normalise_image(_left_with_block(fmt))


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "JPEG"])
def test_truncated_pil_image_is_refused_as_corrupt(fmt: str) -> None:
    buffer = io.BytesIO()
    PILImage.effect_noise((64, 64), 50).save(buffer, format=fmt)
    image = opened(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        normalise_image(image)


def test_pil_image_with_a_new_palette_is_normalised_again() -> None:
    picture = PILImage.new("P", (4, 4), 0)
    picture.putpalette([255, 0, 0] * 256)
    first = normalise_image(picture)
    picture.putpalette([0, 0, 255] * 256)  # same indexes, other colours
    second = normalise_image(picture)
    assert opened(second.data).convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    assert second.digest != first.digest


def test_pil_image_with_new_transparency_is_normalised_again() -> None:
    picture = PILImage.new("RGB", (4, 4), (1, 2, 3))
    first = normalise_image(picture)
    picture.info["transparency"] = (1, 2, 3)  # written as PNG tRNS: the pixels vanish
    second = normalise_image(picture)
    assert opened(second.data).info.get("transparency") == (1, 2, 3)
    assert second.digest != first.digest


def test_only_costly_images_are_left_for_a_worker_thread() -> None:
    """Cheaper than a thread hop: cached or small images; the rest is left (``None``)."""
    from outlines_lmstudio._images import normalise_cheaply

    small = Image(opened(encoded("PNG")))
    assert normalise_cheaply(small) == normalise_image(small)
    noise = PILImage.frombytes("RGB", (128, 128), os.urandom(128 * 128 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    large = Image(opened(buffer.getvalue()))
    assert len(large.image_str) > 16 * 1024
    assert normalise_cheaply(large) is None
    assert normalise_cheaply(noise) is None  # 16,384 pixels
    assert normalise_cheaply(noise.resize((32, 32))) is not None
    done = normalise_image(large)
    assert normalise_cheaply(large) is done  # cached: no hop for it


def test_deferred_images_settle_to_what_format_input_makes() -> None:
    from outlines_lmstudio._images import PendingImage
    from outlines_lmstudio._inputs import deferring_images, format_input, settled

    noise = PILImage.frombytes("RGB", (128, 128), os.urandom(128 * 128 * 3))
    small = Image(opened(encoded("PNG")))
    items = ["Compare", noise, small, noise]
    with deferring_images() as pending:
        prompt = format_input(items)
    assert [type(p) for p in prompt.messages[0].parts] == [
        str,
        PendingImage,
        _images.ImageData,
        PendingImage,
    ]
    assert len(pending) == 2
    assert settled(prompt) == format_input(items)


def turned_photo(fmt: str, orientation: int = 6) -> bytes:
    """A 40x20 image stored with an EXIF orientation (6: shown turned, 20x40) and a profile.

    Its left half is black, its right half white: turned (a quarter clockwise), the top
    half is black.
    """
    image = PILImage.new("RGB", (40, 20), "black")
    image.paste("white", (20, 0, 40, 20))
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera maker"
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif.tobytes(), icc_profile=b"profile")
    return buffer.getvalue()


def grey(image: PILImage.Image, x: int, y: int) -> int:
    value = image.convert("L").getpixel((x, y))
    assert isinstance(value, float | int)
    return int(value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_pil_photo_is_sent_turned_as_its_exif_says(fmt: str) -> None:
    """The decoders behind vision models read the pixels as stored: the turn is applied."""
    sent = opened(normalise_image(opened(turned_photo(fmt))).data)
    assert sent.size == (20, 40)
    assert grey(sent, 10, 5) < 50  # the black half is on top
    assert grey(sent, 10, 35) > 200
    assert sent.getexif().get(0x0112) is None  # applied, so not applied twice
    assert sent.getexif().get(0x010F) == "Camera maker"  # the rest of the EXIF is kept
    assert sent.info.get("icc_profile") == b"profile"


def test_an_outlines_image_of_a_turned_photo_is_sent_turned() -> None:
    """Outlines saves ``image_str`` without the EXIF: the turn is read from its PIL image."""
    sent = opened(normalise_image(Image(opened(turned_photo("JPEG")))).data)
    assert sent.size == (20, 40)
    assert grey(sent, 10, 5) < 50


def test_a_turned_jpeg_keeps_its_own_quantisation_and_subsampling() -> None:
    """Found by a probe: the turned copy had no quantisation tables, so a sideways phone
    photo went at quality 95 (30% larger, a second and different lossy pass)."""
    buffer = io.BytesIO()
    exif = PILImage.Exif()
    exif[0x0112] = 6
    noise = PILImage.effect_noise((64, 48), 40).convert("RGB")
    noise.save(buffer, format="JPEG", quality=60, subsampling=1, exif=exif.tobytes())
    original = opened(buffer.getvalue())
    sent = opened(normalise_image(original).data)
    assert sent.size == (48, 64)
    assert sent.quantization == original.quantization  # type: ignore[attr-defined]
    from PIL import JpegImagePlugin

    assert JpegImagePlugin.get_sampling(sent) == JpegImagePlugin.get_sampling(original) == 1


def test_an_outlines_image_of_a_turned_photo_is_sent_turned_after_its_pil_image_closed() -> None:
    """Found by a probe: with its PIL image closed, image_str (saved by Outlines without the
    EXIF) went as stored: sideways, without a word. The PIL image still has its EXIF."""
    pil = opened(turned_photo("JPEG"))
    wrapped = Image(pil)
    pil.close()
    sent = opened(normalise_image(wrapped).data)
    assert sent.size == (20, 40)
    assert grey(sent, 10, 5) < 50  # the black half is on top


def test_an_image_refused_is_named_by_its_place_in_the_input() -> None:
    """Found by a probe: among several images, or in a Chat, nothing said which one."""
    from outlines.inputs import Chat

    from outlines_lmstudio._inputs import format_input

    bad, good = PILImage.new("F", (4, 4), 0.5), opened(encoded("PNG"))
    for model_input, where in (
        (["compare", good, bad], "the input list, item 2"),
        (Chat([{"role": "user", "content": ["x", good, bad]}]), "Chat message 0, item 2"),
    ):
        with pytest.raises(InvalidImageError, match="floating-point") as caught:
            format_input(model_input)
        assert caught.value.__notes__ == [f"(the image at {where})"]


def test_an_image_refused_in_a_worker_thread_is_named_too() -> None:
    """The async front checks a costly image off the event loop, after the input was read."""
    from outlines_lmstudio._inputs import deferring_images, format_input, settled

    with deferring_images() as pending:
        prompt = format_input(["compare", opened(encoded("PNG")), PILImage.new("F", (3000, 3000))])
    assert pending  # left for later
    with pytest.raises(InvalidImageError, match="floating-point") as caught:
        settled(prompt)
    assert caught.value.__notes__ == ["(the image at the input list, item 2)"]


def test_a_photo_without_a_turn_keeps_its_bytes_and_profile() -> None:
    data = turned_photo("JPEG", orientation=1)
    assert image_from_bytes(data).data == data
    assert opened(normalise_image(opened(data)).data).info.get("icc_profile") == b"profile"


def test_a_multi_page_tiff_is_refused_as_pages_not_animation() -> None:
    pages = [PILImage.new("L", (5, 7), value) for value in (255, 200, 150)]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    with pytest.raises(InvalidImageError, match="TIFF of 3 pages") as caught:
        normalise_image(opened(buffer.getvalue()))
    assert "animated" not in str(caught.value)


def test_an_eps_image_pillow_cannot_read_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pillow reads EPS through Ghostscript: without it the file is not called corrupt."""
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "gs_binary", False)  # as where gs is not installed
    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16), "red").save(buffer, format="EPS")
    with pytest.raises(InvalidImageError, match="Install Ghostscript") as caught:
        normalise_image(opened(buffer.getvalue()))
    assert "corrupt" not in str(caught.value)


@pytest.mark.parametrize("wrap", [False, True])
def test_exif_pillow_cannot_parse_is_not_an_error(wrap: bool) -> None:
    """Such EXIF was never read before the turn was applied; it must not fail the image."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 3), "red").save(buffer, format="PNG", exif=b"garbage")
    image = opened(buffer.getvalue())
    sent = normalise_image(Image(image) if wrap else image)
    assert opened(sent.data).size == (4, 3)


def test_a_cheap_image_whose_lock_is_held_is_left_for_a_thread() -> None:
    """On the event loop, a lock held by a worker (encoding another image) is not waited for."""
    import threading

    image = PILImage.new("RGB", (8, 8), "red")
    [lock] = _images._locks_of(image)
    results: list[object] = []
    with lock:  # as a worker thread encoding an image that shares it
        worker = threading.Thread(target=lambda: results.append(_images.normalise_cheaply(image)))
        worker.start()
        worker.join(5)
        assert not worker.is_alive()
    assert results == [None]
    assert _images.normalise_cheaply(image) is not None  # free again: done on the loop


def test_an_outlines_image_holds_its_pil_images_lock_too() -> None:
    """Two Outlines Images of one PIL image read it: they share its lock."""
    pil = opened(encoded("PNG"))  # Outlines needs an image with a format
    first, second = _images._locks_of(Image(pil)), _images._locks_of(Image(pil))
    [pil_lock] = _images._locks_of(pil)
    assert pil_lock in first
    assert pil_lock in second


def _fidelity_source(fmt: str) -> bytes:
    # Pillow writes an ICO of 400x300 at 256x192 and below (of 256x192, at 128x96 and below).
    width, height = (400, 300) if fmt == "ICO" else (256, 192)
    noise = PILImage.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buffer = io.BytesIO()
    options: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    if fmt == "JPEG":
        options["quality"] = 95
    noise.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["WEBP", "ICO", "JPEG"])
def test_an_outlines_image_is_sent_as_its_pil_image_not_outlines_reencoding(fmt: str) -> None:
    """Found by a probe: ``image_str`` (Pillow's defaults) made a lossless WebP lossy, a
    JPEG quality 75 and a 256x192 ICO 128x96; a PIL image of the same file was sent as is."""
    data = _fidelity_source(fmt)
    sent = normalise_image(Image(opened(data)))
    assert sent.data == normalise_image(opened(data)).data
    with opened(data) as source, opened(sent.data) as decoded:
        assert decoded.size == source.size == (256, 192)
        if fmt != "JPEG":
            assert decoded.convert("RGB").tobytes() == source.convert("RGB").tobytes()


def test_an_outlines_image_of_a_closed_pil_image_is_sent_from_image_str() -> None:
    picture = opened(encoded("PNG", (5, 4)))
    image = Image(picture)
    picture.close()
    assert opened(normalise_image(image).data).size == (5, 4)


def test_a_profile_for_another_mode_is_not_sent_with_converted_pixels() -> None:
    """Found by a probe: a CMYK TIFF's profile was embedded in the RGB PNG sent (Pillow's
    PNG writer reads ``info["icc_profile"]``, which ``convert`` copies)."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    buffer = io.BytesIO()
    PILImage.new("CMYK", (8, 8), (10, 20, 30, 40)).save(buffer, format="TIFF", icc_profile=profile)
    for sent in (normalise_image(opened(buffer.getvalue())), image_from_bytes(buffer.getvalue())):
        with opened(sent.data) as decoded:
            assert (decoded.format, decoded.mode) == ("PNG", "RGB")
            assert "icc_profile" not in decoded.info


def test_a_lab_image_is_converted_to_rgb_its_a_band_not_taken_for_alpha() -> None:
    picture = PILImage.new("RGB", (4, 4), (10, 200, 30)).convert("LAB")
    with opened(normalise_image(picture).data) as decoded:
        assert decoded.mode == "RGB"
        pixel = decoded.getpixel((0, 0))
        assert isinstance(pixel, tuple)
        assert [abs(got - want) < 16 for got, want in zip(pixel, (10, 200, 30), strict=True)] == [
            True
        ] * 3


def test_the_size_refusal_is_not_rewrapped_as_an_encoding_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_images, "MAX_IMAGE_BYTES", 100)
    noise = PILImage.frombytes("RGB", (16, 16), os.urandom(16 * 16 * 3))
    noise.format = "PNG"  # written as PNG in the try block that rewrapped it
    with pytest.raises(InvalidImageError) as caught:
        normalise_image(noise)
    assert str(caught.value).startswith("Image is 0.0 MiB after encoding; the limit is 0 MiB")
    assert caught.value.__cause__ is None


def test_an_orientation_changed_in_place_is_sent_self_consistent() -> None:
    """Found by a probe: the cache did not see ``getexif()[0x0112] = ...`` edits, and a JPEG
    whose tag was set to 1 was sent unturned with the file's orientation 6 in its EXIF."""
    picture = PILImage.new("RGB", (40, 30), "white")
    picture.format = "PNG"
    assert opened(normalise_image(picture).data).size == (40, 30)
    picture.getexif()[0x0112] = 6
    assert opened(normalise_image(picture).data).size == (30, 40)

    exif = PILImage.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), "white").save(buffer, format="JPEG", exif=exif.tobytes())
    photo = opened(buffer.getvalue())
    assert opened(normalise_image(photo).data).size == (30, 40)
    photo.getexif()[0x0112] = 1
    with opened(normalise_image(photo).data) as sent:
        assert sent.size == (40, 30)
        assert sent.getexif().get(0x0112, 1) == 1


def test_many_frames_wording() -> None:
    assert _images.many_frames("TIFF", 2).startswith("a TIFF of 2 pages")
    assert _images.many_frames("GIF", 3).startswith("animated (3 frames)")
