"""Image files (PNG, JPEG, anything Pillow reads) as rows the model takes.

Each image is turned upright by its EXIF orientation, flattened onto white if it has
transparency, converted to 8-bit RGB (greyscale is repeated into three channels, 16-bit
values are scaled to 8 bits), center-cropped to a square and resized to the model's
height x width with Pillow's antialiasing LANCZOS filter. CIFAR-10's own images come out
unchanged. Image files are untrusted input: the file size and the pixel count are checked
from the file system and the image header before any pixel is decoded, and anything Pillow
cannot decode, or modes without a defined 8-bit RGB meaning, are refused by name.
"""

from __future__ import annotations

import os
import stat
import warnings

import numpy as np

from cifar10.layout import IMAGE_SHAPE, pixels_to_row

# The formats read, decided by the file's content: Pillow's own decoders only. Pillow opens more
# (PostScript and EPS through the Ghostscript program, for one), which an untrusted file must not
# reach, whatever its name says.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
MAX_FILE_BYTES = 100 << 20      # a 50-megapixel JPEG is ~20 MB
MAX_PIXELS = 50_000_000         # decoded at most ~200 MB (RGBA); a 30000x30000 image is refused from its header
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
TRANSPARENT = ("RGBA", "RGBa", "LA", "La", "PA", "P")


class ImageError(ValueError):
    """The file is not an image this module can read; the message says why."""


def read_image(path: str | os.PathLike, shape: tuple[int, int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Read an image file as one row (C*H*W,) uint8 in channel-plane order, for `shape` (C, H, W)."""
    from PIL import Image, ImageOps

    channels, height, width = shape
    if channels != 3:
        raise ImageError(f"the model takes {channels}-channel images; this reader makes RGB (3 channels)")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except OSError as err:
        raise ImageError(f"cannot read it ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ImageError("not a regular file (a folder, device or pipe?); give an image file")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageError(f"the file has {info.st_size} bytes, over the {MAX_FILE_BYTES >> 20} MiB limit")
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None   # the check below is ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as img:
                w, h = img.size
                if w * h > MAX_PIXELS or w < 1 or h < 1:
                    raise ImageError(f"it declares {w}x{h} pixels, over the limit of {MAX_PIXELS}: refused as "
                                     "a possible decompression bomb (scale a real image down)")
                img.load()
                img = ImageOps.exif_transpose(img)
            return pixels_to_row(_resized(_to_rgb(img), width, height))
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("decoding it needs more memory than there is") from None
    except Exception as err:  # a decoder failing on crafted bytes may raise anything
        detail = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ImageError(f"not readable as an image ({detail}); give a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} "
                         "file") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def _to_rgb(img):
    """An 8-bit RGB image with the same content, or ImageError naming the mode."""
    from PIL import Image

    mode = img.mode
    if mode in SIXTEEN_BIT or mode == "I":
        values = np.asarray(img, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(f"a 32-bit integer image (mode {mode}) with values outside 0..65535 has no "
                             "defined 8-bit meaning; save it as an 8- or 16-bit image")
        img = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")   # 65535 -> 255
    elif mode == "F":
        raise ImageError("a floating-point image (mode F) has no defined pixel range; save it as an 8- or "
                         "16-bit image")
    if img.mode in TRANSPARENT or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise ImageError(f"images of mode {img.mode} cannot be converted to RGB ({err})") from None


def _resized(img, width: int, height: int) -> np.ndarray:
    """Center-crop to the target's aspect ratio, resize with LANCZOS: uint8 (height, width, 3)."""
    from PIL import Image

    w, h = img.size
    if w * height > h * width:           # too wide: keep the middle columns
        new_w = max(1, round(h * width / height))
        left = (w - new_w) // 2
        img = img.crop((left, 0, left + new_w, h))
    elif w * height < h * width:         # too tall: keep the middle rows
        new_h = max(1, round(w * height / width))
        top = (h - new_h) // 2
        img = img.crop((0, top, w, top + new_h))
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)
