"""reporting/capture.py: pictures as Secondary Capture instances, without a server."""

from __future__ import annotations

import datetime
import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from dicomweb.instance import read_instance
from reporting import capture

from ..data import CT

SOP, STUDY, SERIES = "2.25.1", "2.25.2", "2.25.3"
BASE: dict[str, object] = {"SOPInstanceUID": SOP, "StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES}
NOW = datetime.datetime(2024, 3, 15, 10, 15, 30, tzinfo=datetime.UTC)


def encoded(image: Image.Image, format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def gradient(mode: str, size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A picture whose every pixel differs from its neighbours, so that a misplaced pixel shows."""
    columns, rows = size
    values = (np.arange(rows * columns).reshape(rows, columns) * 7) % 256
    if mode == "RGB":
        return Image.fromarray(np.stack([values, 255 - values, (values * 3) % 256], axis=-1).astype(np.uint8))
    if mode == "I;16":
        return Image.fromarray((values * 251).astype(np.uint16))
    return Image.fromarray(values.astype(np.uint8)).convert(mode)


def convert(data: bytes, picture_type: capture.PictureType = "image/png", **attributes: object) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(capture.convert(data, picture_type, {**BASE, **attributes}, NOW)))


class TestSniff:
    """What a file is, from its first bytes."""

    def test_dicom(self) -> None:
        """The 'DICM' prefix after the 128-byte preamble."""
        assert capture.sniff(CT.read_bytes()[: capture.SNIFF_BYTES]) == "application/dicom"

    def test_pictures(self) -> None:
        """JPEG's SOI marker and PNG's signature."""
        assert capture.sniff(encoded(gradient("RGB"), "JPEG")) == "image/jpeg"
        assert capture.sniff(encoded(gradient("RGB"), "PNG")) == "image/png"

    @pytest.mark.parametrize("head", [b"", b"GIF89a" + bytes(200), b"%PDF-1.7\n", b"\xff\xd8", bytes(132)])
    def test_other(self, head: bytes) -> None:
        """Anything else, a cut-off signature included, is not recognised."""
        assert capture.sniff(head) is None


class TestConvert:
    """The Secondary Capture instance (PS3.3 A.8.1) of a picture."""

    def test_secondary_capture_attributes(self) -> None:
        """SOP class, UIDs, Explicit VR Little Endian, UTF-8, WSD conversion, the capture time, the attributes."""
        ds = convert(
            encoded(gradient("RGB"), "PNG"),
            PatientID="P-1",
            PatientName="Müller^Jürgen",
            PatientBirthDate=datetime.date(1970, 1, 2),
            StudyDate=datetime.date(2024, 3, 1),
            AccessionNumber="ACC1",
            Modality="US",
            SeriesNumber=3,
            InstanceNumber=7,
        )
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" == ds.file_meta.MediaStorageSOPClassUID
        assert (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID) == (SOP, STUDY, SERIES)
        assert ds.file_meta.MediaStorageSOPInstanceUID == SOP
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.PatientName == "Müller^Jürgen"
        assert ds.ConversionType == "WSD" and ds.Modality == "US"
        assert (ds.PatientBirthDate, ds.StudyDate, ds.ContentDate, ds.ContentTime) == (
            "19700102",
            "20240301",
            "20240315",
            "101530",
        )
        assert (ds.SeriesNumber, ds.InstanceNumber, ds.AccessionNumber) == (3, 7, "ACC1")
        assert "LossyImageCompression" not in ds

    def test_type_2_attributes_present_when_unknown(self) -> None:
        """Patient and study attributes that are not known are present and empty; the modality defaults to OT."""
        ds = convert(encoded(gradient("L"), "PNG"), PatientName=None)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"):
            assert keyword in ds and not ds[keyword].value, keyword
        for keyword in ("ReferringPhysicianName", "StudyID", "AccessionNumber", "PatientOrientation"):
            assert keyword in ds and not ds[keyword].value, keyword
        assert ds.Modality == "OT"

    def test_rgb_png_pixels_exact(self) -> None:
        """Colour: RGB, interleaved (PlanarConfiguration 0), three 8-bit samples, every pixel as in the picture."""
        picture = gradient("RGB")
        ds = convert(encoded(picture, "PNG"))
        assert (ds.PhotometricInterpretation, ds.PlanarConfiguration, ds.SamplesPerPixel) == ("RGB", 0, 3)
        assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (30, 40, 8, 8, 7)
        assert ds.PixelRepresentation == 0
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(picture))

    def test_greyscale_8_bit(self) -> None:
        """L: MONOCHROME2, one 8-bit sample."""
        picture = gradient("L")
        ds = convert(encoded(picture, "PNG"))
        assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated) == ("MONOCHROME2", 1, 8)
        assert "PlanarConfiguration" not in ds
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(picture))

    def test_greyscale_16_bit(self) -> None:
        """I;16: MONOCHROME2 with 16 bits, values kept."""
        picture = gradient("I;16")
        ds = convert(encoded(picture, "PNG"))
        assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (
            "MONOCHROME2",
            16,
            16,
            15,
        )
        assert ds["PixelData"].VR == "OW"
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(picture))

    def test_alpha_dropped(self) -> None:
        """RGBA becomes RGB and LA becomes L, the colour values kept."""
        rgba = gradient("RGB").convert("RGBA")
        rgba.putalpha(Image.fromarray(np.full((30, 40), 10, dtype=np.uint8)))
        ds = convert(encoded(rgba, "PNG"))
        assert ds.SamplesPerPixel == 3
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(gradient("RGB")))
        la = gradient("LA")
        ds = convert(encoded(la, "PNG"))
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(gradient("L")))

    def test_palette_and_bilevel(self) -> None:
        """A palette picture is stored as RGB, a 1-bit one as 8-bit greyscale (0 and 255)."""
        palette = gradient("RGB").convert("P")
        ds = convert(encoded(palette, "PNG"))
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(palette.convert("RGB")))
        bilevel = gradient("L").convert("1")
        ds = convert(encoded(bilevel, "PNG"))
        assert ds.BitsAllocated == 8 and set(np.unique(ds.pixel_array)) <= {0, 255}

    def test_jpeg(self) -> None:
        """A JPEG's decoded pixels, marked as lossy compressed once (C.7.6.1.1.5)."""
        data = encoded(gradient("RGB"), "JPEG", quality=90)
        ds = convert(data, "image/jpeg")
        assert (ds.LossyImageCompression, ds.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(Image.open(io.BytesIO(data))))
        grey = convert(encoded(gradient("L"), "JPEG"), "image/jpeg")
        assert grey.PhotometricInterpretation == "MONOCHROME2"
        cmyk = convert(encoded(gradient("RGB").convert("CMYK"), "JPEG"), "image/jpeg")
        assert cmyk.PhotometricInterpretation == "RGB" and cmyk.SamplesPerPixel == 3

    def test_exif_orientation_applied(self) -> None:
        """A picture taken sideways (EXIF Orientation 6: rotate 90° clockwise) is stored upright."""
        picture = gradient("L")  # 40 columns, 30 rows
        exif = Image.Exif()
        exif[0x0112] = 6
        ds = convert(encoded(picture, "PNG", exif=exif))
        assert (ds.Rows, ds.Columns) == (40, 30)
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(picture.transpose(Image.Transpose.ROTATE_270)))

    def test_odd_length_padded(self) -> None:
        """Pixel data of an odd number of bytes gets one padding byte (PS3.5 §7.1.1)."""
        picture = gradient("L", (3, 3))
        ds = convert(encoded(picture, "PNG"))
        assert len(ds.PixelData) == 10
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(picture))

    def test_archive_accepts_it(self, tmp_path: Path) -> None:
        """The instance passes the archive's own validation of received files."""
        path = tmp_path / "sc.dcm"
        path.write_bytes(capture.convert(encoded(gradient("RGB"), "JPEG"), "image/jpeg", {**BASE, "PatientID": "P"}))
        instance = read_instance(path, STUDY)
        assert (instance.sop_instance_uid, instance.sop_class_uid) == (SOP, "1.2.840.10008.5.1.4.1.1.7")


class TestRefused:
    """Pictures that cannot be converted raise PictureError; wrong attributes are a programming error."""

    @pytest.mark.parametrize(
        ("data", "picture_type"),
        [
            (b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png"),
            (encoded(gradient("RGB"), "PNG")[:-200], "image/png"),
            (encoded(gradient("RGB"), "JPEG")[:300], "image/jpeg"),
            (b"\xff\xd8\xff" + b"junk" * 50, "image/jpeg"),
            (encoded(gradient("RGB"), "PNG"), "image/jpeg"),
        ],
        ids=["png-garbage", "png-truncated", "jpeg-truncated", "jpeg-garbage", "wrong-type"],
    )
    def test_broken(self, data: bytes, picture_type: capture.PictureType) -> None:
        with pytest.raises(capture.PictureError, match="cannot be decoded"):
            capture.convert(data, picture_type, BASE)

    def test_too_many_pixels(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Beyond MAX_PICTURE_PIXELS the picture is refused before it is decoded."""
        monkeypatch.setattr(capture, "MAX_PICTURE_PIXELS", 1000)
        with pytest.raises(capture.PictureError, match="40x30 pixels"):
            capture.convert(encoded(gradient("L"), "PNG"), "image/png", BASE)

    def test_attributes(self) -> None:
        """The three UIDs are required; keys must be DICOM keywords."""
        data = encoded(gradient("L"), "PNG")
        with pytest.raises(ValueError, match="SeriesInstanceUID"):
            capture.convert(data, "image/png", {"SOPInstanceUID": SOP, "StudyInstanceUID": STUDY})
        with pytest.raises(ValueError, match="not a DICOM keyword"):
            capture.convert(data, "image/png", {**BASE, "PatientNickname": "x"})
