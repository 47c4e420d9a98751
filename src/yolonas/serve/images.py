"""Request bodies to images: the accepted formats, the pixel limit read from the header, then OpenCV's decoder.

The pixel limit is checked on the size the file declares, before a single pixel is decoded, so a small PNG that
declares 50,000 x 50,000 costs a header read. Decoding is the data sets' own (`cv2.imdecode`, EXIF orientation
ignored), so the server sees the pixels `yolonas predict` sees in the same file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from yolonas.data.images import decode_image as decode_bytes
from yolonas.errors import ImageError
from yolonas.serve.errors import ApiError

# What PIL names the formats we accept (MPO: the JPEG that many cameras write).
FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "DIB": "BMP", "TIFF": "TIFF"}
ACCEPTED = "JPEG, PNG, WebP, BMP or TIFF"
PIL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS  # PIL refuses to open images above this: the highest pixel limit there is


@dataclass(frozen=True)
class Header:
    """What the file says about itself before it is decoded."""

    format: str
    width: int
    height: int


def read_header(data: bytes, max_pixels: int) -> Header:
    """The format and size `data` declares; ApiError when it is empty, not an image, a format we do not take,
    or over `max_pixels`."""
    if not data:
        raise ApiError(400, "empty body: send the image's bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError:
        # PIL's own refusal (twice its MAX_IMAGE_PIXELS), above any limit the server allows.
        raise ApiError(413, f"image declares over {PIL_LIMIT:,} pixels, over the limit of {max_pixels:,}"
                            ) from None
    except UnidentifiedImageError:
        raise ApiError(400, f"not an image, or of a format not recognised: send {ACCEPTED}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ApiError(400, f"not a readable image ({_first_line(e)}); send {ACCEPTED}") from None
    if fmt not in FORMATS:
        raise ApiError(415, f"{fmt} images are not accepted; send {ACCEPTED}")
    if width * height > max_pixels:
        raise ApiError(413, f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                                 f"{max_pixels:,}")
    if width < 1 or height < 1:
        raise ApiError(400, f"image declares a size of {width}x{height}")
    return Header(FORMATS[fmt], width, height)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """`data` (an encoded image) as an RGB uint8 HWC array, after the header checks of `read_header`."""
    header = read_header(data, max_pixels)
    try:
        rgb = decode_bytes(data, "image")
    except ImageError:
        raise ApiError(400, f"corrupt or truncated {header.format} image: it cannot be decoded") from None
    if rgb.shape[:2] != (header.height, header.width):
        # A file whose data disagrees with its header could smuggle in more pixels than were checked.
        raise ApiError(400, f"{header.format} image declares {header.width}x{header.height} but decodes to "
                                 f"{rgb.shape[1]}x{rgb.shape[0]}")
    return rgb


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
