"""Rendering one frame of a stored instance as a consumer-format image (JPEG, PNG or GIF), and parsing the
parameters that control it: the blocking, CPU-bound half of WADO-RS rendered/thumbnail (PS3.18 §10.4.1.1.3,
§10.4.1.1.4) and WADO-URI Retrieve Rendered Instance (PS3.18 §9.5). Nothing here touches HTTP, the database or the
archive: the transactions parse with these functions and run ``render`` in the CPU process pool.

Rendering follows the grayscale pipeline of PS3.4 §N.2 for one frame: decode (pydicom, in the CPU processes), Modality
LUT (Rescale Slope/Intercept or a Modality LUT Sequence), VOI (the ``window`` parameter; else the instance's first
Window Center/Width with its VOI LUT Function; else its VOI LUT Sequence; else the frame's minimum to maximum),
MONOCHROME1 inverted, then 8 bits. Colour images (RGB; YBR_* converted by pydicom; PALETTE COLOR through its LUT) are
shown as RGB without windowing. The image is then fitted into the viewport, keeping its aspect ratio.
"""

from __future__ import annotations

import io
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import simplejpeg
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from . import frames
from .errors import BadRequest
from .transcode import decoding, prefer_charls, unencapsulate

prefer_charls()  # rendering decodes in the CPU pool's workers too

JPEG, PNG, GIF = "image/jpeg", "image/png", "image/gif"
RENDERED_TYPES = (JPEG, PNG, GIF)  # PS3.18 Table 8.7.4-1: single-frame image types; JPEG is the default
PIL_FORMATS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}
DEFAULT_QUALITY = 90  # JPEG quality when the request has no ``quality`` parameter (1 to 100)
MAX_VIEWPORT = 8192  # pixels per side: a larger viewport or rows/columns is refused (400)
INTEGER = re.compile(r"[0-9]{1,10}")

WindowFunction = Literal["linear", "linear-exact", "sigmoid"]
# VOI LUT Function (0028,1056) defined terms (PS3.3 C.11.2.1.3) and their PS3.18 §8.3.5.1.4 spelling.
VOI_LUT_FUNCTIONS: dict[str, WindowFunction] = {
    "LINEAR": "linear",
    "LINEAR_EXACT": "linear-exact",
    "SIGMOID": "sigmoid",
}


@dataclass(frozen=True)
class Window:
    """A VOI window: center and width in modality (rescaled) values, and how values in between are mapped."""

    center: float
    width: float
    function: WindowFunction = "linear"


@dataclass(frozen=True)
class Rendering:
    """How to render a frame: VOI window (None: the instance's own), the largest size (None: no limit on that
    side), a region of the source (fractions x0, y0, x1, y1 of its columns and rows, WADO-URI ``region``), quality."""

    window: Window | None = None
    max_width: int | None = None
    max_height: int | None = None
    region: tuple[float, float, float, float] | None = None
    quality: int = DEFAULT_QUALITY


# Parsing the query (pure) --------------------------------------------------------------------------------------


def parse_number(text: str, name: str) -> float:
    """A finite decimal number, else 400 naming the parameter."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(f"{name}: {text[:40]!r} is not a number")
    return value


def parse_int(text: str, name: str, low: int, high: int) -> int:
    """An integer from ``low`` to ``high``, else 400 naming the parameter."""
    stripped = text.strip()
    if not INTEGER.fullmatch(stripped) or not low <= int(stripped) <= high:
        raise BadRequest(f"{name}: {text[:40]!r} is not an integer from {low} to {high}")
    return int(stripped)


def make_window(center: float, width: float, function: WindowFunction, name: str) -> Window:
    """A Window whose width suits its function (PS3.3 C.11.2.1.2.1: LINEAR needs width >= 1; the others > 0)."""
    minimum, allowed = (">= 1", width >= 1) if function == "linear" else ("> 0", width > 0)
    if not allowed:
        raise BadRequest(f"{name}: the width of a {function} window must be {minimum}, not {width:g}")
    return Window(center, width, function)


def parse_window(text: str) -> Window:
    """PS3.18 §8.3.5.1.4 ``window=center,width[,function]``, function linear (default), linear-exact or sigmoid."""
    values = text.split(",")
    if len(values) not in (2, 3):
        raise BadRequest(f"window: {text[:80]!r} is not center,width[,function]")
    center, width = (parse_number(v, "window") for v in values[:2])
    function = VOI_LUT_FUNCTIONS.get(values[2].strip().upper().replace("-", "_")) if len(values) == 3 else "linear"
    if function is None:
        raise BadRequest(f"window: function {values[2][:40]!r} is not one of linear, linear-exact, sigmoid")
    return make_window(center, width, function, "window")


def parse_viewport(text: str) -> tuple[int, int]:
    """PS3.18 §8.3.5.1.3 ``viewport=vw,vh``: the rendered image fits in vw x vh pixels, keeping its aspect ratio."""
    values = text.split(",")
    if len(values) == 6:
        raise BadRequest("viewport: a source region (vw,vh,sx,sy,sw,sh) is not supported; send viewport=vw,vh")
    if len(values) != 2:
        raise BadRequest(f"viewport: {text[:80]!r} is not vw,vh")
    width, height = (parse_int(v, "viewport", 1, MAX_VIEWPORT) for v in values)
    return width, height


def rendering_from_query(params: Mapping[str, str], viewport: tuple[int, int] | None = None) -> Rendering:
    """The WADO-RS rendering parameters (PS3.18 §8.3.5.1); ``annotation``, ``charset`` and ``iccprofile`` are
    accepted and ignored (nothing is burned in; output is plain 8-bit sRGB or grayscale)."""
    if "viewport" in params:
        viewport = parse_viewport(params["viewport"])
    return Rendering(
        window=parse_window(params["window"]) if "window" in params else None,
        max_width=viewport[0] if viewport else None,
        max_height=viewport[1] if viewport else None,
        quality=parse_int(params["quality"], "quality", 1, 100) if "quality" in params else DEFAULT_QUALITY,
    )


# Rendering (blocking and CPU-bound: run it in the CPU process pool) -------------------------------------------


def render(
    path: Path, frame: int, rendering: Rendering, media_type: str, location: Sequence[Sequence[int]] | None = None
) -> bytes:
    """Frame ``frame`` of the stored file at ``path`` rendered (``render_frame``); transcode.CannotDecode when its
    pixel data or the attributes that describe it cannot be decoded."""
    with decoding(f"frame {frame}", passing=(frames.NoPixelData, frames.FrameNotFound)):
        return render_frame(path, frame, rendering, media_type, location)


def render_frame(
    path: Path, frame: int, rendering: Rendering, media_type: str, location: Sequence[Sequence[int]] | None = None
) -> bytes:
    """Frame ``frame`` (1-based) of the stored file at ``path``, rendered and encoded as ``media_type``.

    With ``location`` (the frame's byte ranges in the file, recorded at store time) a native grayscale frame is read
    from there and only the header before the pixel data is parsed, once (``pixel_header``); otherwise, and for
    every other kind of frame, pydicom reads and decodes just the frame asked for. Raises frames.NoPixelData or
    frames.FrameNotFound.
    """
    if location is not None:
        header = pixel_header(path)
        native = native_frame(path, location, header)
        if native is not None:
            return encode(display_pixels(native, header, rendering.window), rendering, media_type)
    ds = Dataset()  # filled by pixel_array with the group 0028 attributes (pixel module, LUTs, windows)
    try:
        pixels = pixel_array(path, index=frame - 1, ds_out=ds)
    except (AttributeError, ValueError, IndexError, NotImplementedError):
        count = frames.frame_count(path)  # raises NoPixelData
        if not 1 <= frame <= count:
            raise _frame_not_found(frame, count) from None
        # Read whole where reading from the file fails (a deflated data set's pixel data is inside the stream;
        # Encapsulated Uncompressed has no decoder of pydicom's).
        ds = dcmread(path)
        if ds.file_meta.get("TransferSyntaxUID") == frames.ENCAPSULATED_UNCOMPRESSED:
            unencapsulate(ds)
        pixels = pixel_array(ds, index=frame - 1)
    count = int(ds.get("NumberOfFrames") or 1)
    if frame > count:
        raise _frame_not_found(frame, count)
    return encode(display_pixels(pixels, ds, rendering.window), rendering, media_type)


HEADERS_KEPT = 4096  # pixel headers kept per process (a few kilobytes each)
# A header whose values (LUT data, mostly) take more than about this many bytes is parsed each time instead of kept:
# a 16-bit palette or VOI LUT holds 65,536 entries per table.
KEPT_HEADER_BYTES = 16 * 1024
_headers: OrderedDict[Path, Dataset] = OrderedDict()
_headers_lock = threading.Lock()


def pixel_header(path: Path) -> Dataset:
    """What rendering reads of a stored file besides its pixels: its group 0028 (the Image Pixel module, Modality
    LUT, VOI LUT and palette attributes) and its transfer syntax. Parsed once and kept for the next frames, windows
    and sizes of the same instance (a stored file never changes: a replaced instance is another file). Only that
    group is kept, so an enhanced multi-frame instance's functional groups or a large private value are not held,
    and not when its own values are large."""
    with _headers_lock:
        header = _headers.get(path)
        if header is not None:
            _headers.move_to_end(path)
            return header
    parsed = dcmread(path, stop_before_pixels=True)
    header = parsed.group_dataset(0x0028)  # keeps the data set's original encoding (VOI LUT words' byte order)
    header.file_meta = FileMetaDataset()
    header.file_meta.TransferSyntaxUID = parsed.file_meta.get("TransferSyntaxUID")
    size = 0
    for element in header.iterall():  # every value converted now, so that threads sharing it only read it
        value = element.value
        size += len(value) if isinstance(value, bytes) else 8 * len(value) if isinstance(value, MultiValue) else 8
    if size > KEPT_HEADER_BYTES:
        return header
    with _headers_lock:
        _headers[path] = header
        if len(_headers) > HEADERS_KEPT:
            _headers.popitem(last=False)
    return header


def native_frame(path: Path, location: Sequence[Sequence[int]], ds: Dataset) -> npt.NDArray[np.generic] | None:
    """A one-sample, 8 or 16-bit little endian native frame read at ``location``, as pydicom's pixel_array gives it
    (the bits above Bits Stored corrected as it does, PS3.5 §8.1.1); None for any other kind of frame."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    bits, stored = int(ds.get("BitsAllocated") or 0), int(ds.get("BitsStored") or 0)
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if (
        syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        or int(ds.get("SamplesPerPixel") or 1) != 1
        or bits not in (8, 16)
        or not 1 <= stored <= bits
        or len(location) != 1
        or location[0][1] != rows * columns * bits // 8
    ):
        return None
    offset, length = location[0]
    with path.open("rb") as file:
        data = os.pread(file.fileno(), length, offset)
    if len(data) != length:
        return None  # a file shorter than its index says: pydicom's reading says what is wrong
    signed = ds.get("PixelRepresentation") == 1
    pixels = np.frombuffer(data, dtype=f"<{'i' if signed else 'u'}{bits // 8}").reshape(rows, columns)
    if stored < bits:  # as pydicom: shifted up and back, which sign-extends signed values and clears the rest
        unused = bits - stored
        pixels = np.right_shift(np.left_shift(pixels, unused), unused)
    return pixels


def _frame_not_found(frame: int, count: int) -> frames.FrameNotFound:
    return frames.FrameNotFound(f"frame {frame} does not exist: the instance has {count} frame(s)")


def display_pixels(pixels: npt.NDArray[np.generic], ds: Dataset, requested: Window | None) -> npt.NDArray[np.uint8]:
    """One decoded frame as 8-bit grayscale (rows, columns) or RGB (rows, columns, 3)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)[..., :3]  # 8 or 16 bits per entry; an alpha channel is dropped
        return _to_uint8(rgb, 16 if rgb.dtype == np.uint16 else 8)
    if pixels.ndim == 3:  # RGB, or YBR_* that pydicom has converted to RGB
        return _to_uint8(pixels, int(ds.get("BitsStored") or 8))
    if pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2 and "ModalityLUTSequence" not in ds:
        # Stored values are integers in a range far smaller than the image (at most 65,536 of them for 262,144
        # pixels of a 512x512 CT): the pipeline runs once per value in the range, and the pixels look it up. The
        # Modality LUT is then a rescale, so the range's ends are the values' ends as the pipeline needs them.
        low, high = int(pixels.min()), int(pixels.max())
        lut = grayscale(np.arange(low, high + 1).astype(pixels.dtype), ds, requested, photometric)
        # Each pixel's place in the table, value - low, computed on the unsigned view of the values: the wrap-around
        # is exact since the range is narrower than the type, and an index of the pixels' own size lets np.take
        # look up three times faster than a widened one.
        unsigned = np.dtype(f"u{pixels.dtype.itemsize}").newbyteorder(pixels.dtype.byteorder)
        places = np.subtract(pixels.view(unsigned), unsigned.type(low % (1 << 8 * pixels.dtype.itemsize)))
        looked_up: npt.NDArray[np.uint8] = np.take(lut, places)
        return looked_up
    return grayscale(pixels, ds, requested, photometric)


def grayscale(
    pixels: npt.NDArray[np.generic], ds: Dataset, requested: Window | None, photometric: str
) -> npt.NDArray[np.uint8]:
    """The grayscale pipeline of PS3.4 §N.2 for each value: Modality LUT, VOI, polarity, to 8 bits."""
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    voi = requested or instance_window(ds)
    if voi is not None:
        shown = apply_window(values, voi)
    elif ds.get("VOILUTSequence"):
        shown = _apply_voi_lut(values, ds)
    else:
        low, high = float(values.min()), float(values.max())
        flat = np.zeros_like(values)
        shown = apply_window(values, Window((low + high) / 2, high - low, "linear-exact")) if high > low else flat
    if photometric == "MONOCHROME1":
        shown = 1.0 - shown  # PS3.3 C.7.6.3.1.2: minimum value is white
    return np.rint(shown * 255).astype(np.uint8)


def instance_window(ds: Dataset) -> Window | None:
    """The first Window Center/Width of the instance with its VOI LUT Function; None if absent or unusable."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = VOI_LUT_FUNCTIONS.get(str(ds.get("VOILUTFunction", "LINEAR")).strip().upper(), "linear")
    try:
        return make_window(center, width, function, "Window Width")
    except BadRequest:
        return None  # an unusable stored window falls through to the next VOI choice


def _first(value: object) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def apply_window(values: npt.NDArray[np.float64], voi: Window) -> npt.NDArray[np.float64]:
    """Values mapped to 0..1 by a window (PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.2 LINEAR_EXACT, C.11.2.1.3.1
    SIGMOID)."""
    center, width = voi.center, voi.width
    if voi.function == "sigmoid":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if voi.function == "linear":
        center, width = center - 0.5, width - 1
        if width == 0:  # a threshold: values above center - 0.5 are white
            return (values > center).astype(np.float64)
    return np.clip((values - center) / width + 0.5, 0.0, 1.0)


def _apply_voi_lut(values: npt.NDArray[np.float64], ds: Dataset) -> npt.NDArray[np.float64]:
    """The first VOI LUT Sequence item (PS3.3 C.11.2.1.1), its output range 0..2^n-1 scaled to 0..1.

    Values below the first mapped value take the first entry, values past the last take the last. (pydicom 3.0's
    apply_voi indexes 8-bit LUTs with 8-bit integers, which wraps for LUTs of more than 256 entries.)
    """
    item = ds.VOILUTSequence[0]
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    data = item.LUTData
    if isinstance(data, bytes):  # OW: 16-bit words in the data set's byte order
        data = np.frombuffer(data, dtype="<u2" if ds.original_encoding[1] is not False else ">u2")
    lut = np.asarray(data, dtype=np.float64)[:entries]
    index = np.clip(np.rint(values) - first_mapped, 0, len(lut) - 1).astype(np.intp)
    mapped: npt.NDArray[np.float64] = lut[index] / max(2**bits - 1, float(lut.max()))
    return mapped


def _to_uint8(pixels: npt.NDArray[np.generic], bits: int) -> npt.NDArray[np.uint8]:
    if pixels.dtype == np.uint8:
        return pixels.astype(np.uint8, copy=False)
    scaled: npt.NDArray[np.float64] = pixels.astype(np.float64) * (255 / (2**bits - 1))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def fitted_size(width: int, height: int, max_width: int | None, max_height: int | None) -> tuple[int, int]:
    """The largest size within the limits with the source's aspect ratio (scaled up or down); the source's own
    size when neither limit is given."""
    scales = [limit / size for limit, size in ((max_width, width), (max_height, height)) if limit is not None]
    if not scales:
        return width, height
    scale = min(scales)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode(pixels: npt.NDArray[np.uint8], rendering: Rendering, media_type: str) -> bytes:
    """8-bit pixels cropped to the region, fitted to the viewport and encoded (JPEG by simplejpeg, PNG and GIF by
    Pillow)."""
    if rendering.region is not None:
        image = Image.fromarray(pixels)
        x0, y0, x1, y1 = rendering.region
        width, height = image.size
        box = (round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height))
        pixels = np.asarray(image.crop((box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1))))
    height, width = pixels.shape[:2]
    size = fitted_size(width, height, rendering.max_width, rendering.max_height)
    if size != (width, height):
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
    if media_type == JPEG:
        return jpeg(pixels, rendering.quality)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, PIL_FORMATS[media_type])
    return buffer.getvalue()


def jpeg(pixels: npt.NDArray[np.uint8], quality: int) -> bytes:
    """8-bit grayscale or RGB pixels as a baseline JPEG by libjpeg-turbo through simplejpeg: about 40% less time than
    Pillow's encoder here, with the GIL released while it works. Colour is subsampled 4:2:0, as Pillow does."""
    if pixels.ndim == 2:
        gray = np.ascontiguousarray(pixels)[:, :, None]
        return bytes(simplejpeg.encode_jpeg(gray, quality=quality, colorspace="GRAY"))
    rgb = np.ascontiguousarray(pixels)
    return bytes(simplejpeg.encode_jpeg(rgb, quality=quality, colorspace="RGB", colorsubsampling="420"))
