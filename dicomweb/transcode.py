"""Change an instance's transfer syntax for WADO-RS (PS3.18 §8.7.3.5): decode with pydicom's pixel plugins and
write it again. Blocking: call from a worker thread. Lossless targets only, so the SOP Instance UID is kept."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from rle.utils import decode_pixel_data

from .frames import ENCAPSULATED_UNCOMPRESSED

# Transfer syntaxes this archive can produce from any stored one it can decode.
NATIVE_TARGETS = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


def prefer_charls() -> None:
    """Decode JPEG-LS with CharLS (pyjpegls) rather than libjpeg (pylibjpeg) when both are installed: about four
    times faster here on 512x512 16-bit CT (7 ms against 28 ms a frame). pydicom tries its plugins in the order they
    were registered, so the slower one is taken out of the JPEG-LS decoders."""
    for syntax in (JPEGLSLossless, JPEGLSNearLossless):
        decoder = get_decoder(syntax)
        if "pyjpegls" in decoder.available_plugins and "pylibjpeg" in decoder.available_plugins:
            decoder.remove_plugin("pylibjpeg")


prefer_charls()  # in every process that decodes: this module is imported by the CPU pool's workers


class CannotTranscode(Exception):
    """The instance cannot be given the requested transfer syntax (no decoder, or an unsupported target)."""


class CannotDecode(CannotTranscode):
    """The stored pixel data (or the data set around it) cannot be decoded: the file was accepted with a sound header,
    but its pixel data is broken in a way only decoding shows. The message is the decoder's own reason. The stored
    bytes can still be retrieved as they are (``transfer-syntax=*``)."""


@contextmanager
def decoding(what: str, passing: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn any failure of pydicom or its plugins while decoding ``what`` into CannotDecode; OSError (a file gone or
    unreadable, which says nothing about the stored data) and the ``passing`` exceptions go through as they are. The
    plugins raise every kind of exception for broken data (RuntimeError, ValueError, AttributeError, ...)."""
    try:
        yield
    except BaseException as exc:  # pylibjpeg-rle (Rust) panics on a corrupt segment with pyo3's BaseException
        if isinstance(exc, (OSError, CannotTranscode, *passing)) or not decoder_failure(exc):
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CannotDecode(f"{what} cannot be decoded: {reason[:MAX_REASON_CHARACTERS]}") from None


def decoder_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a decoder's failure rather than the process being stopped or a task cancelled: any
    Exception, and the PanicException (a BaseException) that codecs written in Rust raise through pyo3."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


MAX_REASON_CHARACTERS = 300  # of a decoder's message, in an error body or a Warning header


def can_transcode(stored: str, target: str) -> bool:
    """Whether ``transcode`` can turn ``stored`` into ``target`` with the installed plugins."""
    if stored == target:
        return True
    if target not in NATIVE_TARGETS:
        return False
    uid = UID(stored)
    if not uid.is_compressed or uid == ENCAPSULATED_UNCOMPRESSED:
        return True
    try:
        return bool(get_decoder(uid).is_available)
    except (NotImplementedError, ValueError):
        return False


# Transfer syntaxes whose frames are read or decoded in about a millisecond (RLE: 0.7 ms for a 512x512 16-bit CT
# slice here), for frames up to QUICK_PIXELS: handing such work to the CPU process pool (and its result back) costs
# more than the work, so it runs in a worker thread. The rest (JPEG 2000: 30 ms) and larger frames go to the pool:
# pydicom holds the GIL while it parses and decodes.
QUICK_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless})
QUICK_PIXELS = 1024 * 1024


def quick_to_decode(transfer_syntax_uid: str, pixels_per_frame: int | None) -> bool:
    """Whether a frame of this syntax and size is decoded (or rendered) in a worker thread, not in the pool."""
    return transfer_syntax_uid in QUICK_SYNTAXES and pixels_per_frame is not None and pixels_per_frame <= QUICK_PIXELS


def transcode(path: Path, target: str) -> bytes:
    """The PS3.10 bytes of the stored file at ``path`` in ``target`` transfer syntax; CannotDecode when its data set
    or pixel data cannot be decoded."""
    with decoding("the stored data set"):
        ds = dcmread(path)
        stored = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if not can_transcode(stored, target):
        raise CannotTranscode(f"cannot convert {stored.name or 'an unknown transfer syntax'} to {UID(target).name}")
    with decoding("the stored pixel data"):
        if stored == ENCAPSULATED_UNCOMPRESSED and "PixelData" in ds:
            unencapsulate(ds)
        elif stored.is_compressed and "PixelData" in ds:
            ds.decompress(generate_instance_uid=False)
        elif not stored.is_little_endian and "PixelData" in ds:
            # pydicom writes OW values as they are; big endian pixel words must be swapped by hand (its docs say so).
            pixels = ds.pixel_array
            if ds.get("SamplesPerPixel", 1) > 1:
                ds.PlanarConfiguration = 0  # pixel_array is colour-by-pixel
            ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    with decoding("the stored data set"):
        # Every element converted, so that each has its VR from the data dictionary: a file that says explicit VR
        # but holds implicit VR elements (pydicom reads both) has none in its raw elements, and dcmwrite needs one.
        for _ in ds.iterall():
            pass
        # Command elements (group 0000) have no place in a stored data set (PS3.5 §7.1) and dcmwrite refuses them.
        for tag in [tag for tag in ds.keys() if tag.group == 0]:
            del ds[tag]
        ds.file_meta.TransferSyntaxUID = UID(target)
        buffer = io.BytesIO()
        ds.preamble = ds.preamble or b"\x00" * 128  # PS3.10 §7.1; the File Meta Information is kept and rewritten
        dcmwrite(buffer, ds, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True, force_encoding=True)
    return buffer.getvalue()


def unencapsulate(ds: Dataset) -> None:
    """Encapsulated Uncompressed Explicit VR Little Endian made native: each fragment holds one native little endian
    frame (PS3.5 Annex A.4), padded to an even length, so the frames cut to their size and joined are native pixel
    data. pydicom 3.0 has no decoder for it, and needs none after this."""
    count = int(ds.get("NumberOfFrames") or 1)
    samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.BitsAllocated)
    size = int(ds.Rows) * int(ds.Columns) * samples * bits // 8
    if bits % 8:
        raise CannotDecode(f"Encapsulated Uncompressed pixel data of {bits} bits per sample cannot be made native")
    ds.PixelData = b"".join(frame[:size] for frame in generate_frames(ds.PixelData, number_of_frames=count))
    element = ds["PixelData"]
    element.is_undefined_length = False
    element.VR = "OW" if bits > 8 else "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def decode_frames(path: Path, numbers: list[int]) -> list[bytes | CannotDecode]:
    """Frames of a compressed instance decoded to native little endian bytes (colour as RGB, by pixel), one at a
    time: pydicom decodes only the frames asked for. A frame that cannot be decoded is its CannotDecode, so that the
    caller can send the others."""
    frames: list[bytes | CannotDecode] = []
    for number in numbers:
        try:
            with decoding(f"frame {number}"):
                pixels = pixel_array(path, index=number - 1)
                frames.append(pixels.astype(pixels.dtype.newbyteorder("<")).tobytes())
        except CannotDecode as exc:
            frames.append(exc)
    return frames


def decode_rle(frame: bytes, pixels: int, bits_allocated: int) -> bytes | None:
    """One RLE Lossless frame of one sample per pixel (PS3.5 Annex G) decoded to native little endian bytes, straight
    from its compressed bytes (no parsing of the file); None when this cannot be done here (colour frames, which
    pydicom converts to RGB; a frame the decoder refuses), and the caller decodes with ``decode_frames``, which says
    what is wrong with it."""
    segments = int.from_bytes(frame[:4], "little")  # the RLE header's segment count: one per byte of each sample
    if bits_allocated not in (8, 16, 32) or segments != bits_allocated // 8:
        return None
    # The decoder uses only the number of pixels (rows x columns) of the frame.
    try:
        decoded = decode_pixel_data(
            frame, version=2, rows=1, columns=pixels, bits_allocated=bits_allocated, byteorder="<"
        )
    except BaseException as exc:  # broken RLE data: decode_frames decodes again, and its CannotDecode says why
        if not decoder_failure(exc):
            raise
        return None
    return bytes(decoded)
