"""WADO-RS rendered and thumbnail resources (PS3.18 §10.4.1.1.3-4, §8.3.5) against a real server and real files:
the images are decoded with Pillow and compared with windowing computed here from pydicom's pixel_array."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from requests_toolbelt.multipart.decoder import MultipartDecoder

from dicomweb.rendering import Window, display_pixels, grayscale, native_frame

from .conftest import LiveServer, store
from .data import (
    CT,
    DEFLATED,
    JPEG2000,
    JPEG_BASELINE,
    MR_BIG_ENDIAN,
    MULTIFRAME_US,
    SR,
    TEST_FILES,
    ct_instance,
    readable_test_files,
    stow_headers,
)
from .data import multipart as multipart_body
from .test_frame_index import indexed

RGB = TEST_FILES / "examples_rgb_color.dcm"  # 320 x 240 RGB, native
PALETTE = TEST_FILES / "examples_palette.dcm"  # 800 x 350 PALETTE COLOR, 16-bit LUT entries
MONOCHROME1_CR = TEST_FILES / "dicomdirtests" / "77654033" / "CR1" / "6154"  # 16 x 16 CR, window 1600/2800
FILES = [CT, MR_BIG_ENDIAN, JPEG_BASELINE, RGB, PALETTE, MONOCHROME1_CR, MULTIFRAME_US, SR, DEFLATED, JPEG2000]


def variant(path: Path, **attributes: object) -> bytes:
    """The file with fresh UIDs (so it never collides with a stored one) and some attributes changed."""
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def lut_item(descriptor: list[int], data: list[int]) -> Dataset:
    item = Dataset()
    item.add_new("LUTDescriptor", "SS" if min(descriptor) < 0 else "US", descriptor)
    item.add_new("LUTData", "US", data)
    return item


@dataclass
class Stored:
    """The session server with the named files and a few variants of CT_small stored."""

    server: LiveServer
    variants: dict[str, bytes]

    def url(self, source: Path | bytes, suffix: str = "") -> str:
        ds = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source, stop_before_pixels=True)
        return (
            f"{self.server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}{suffix}"
        )


@pytest.fixture(scope="module")
def stored(session_server: LiveServer) -> Stored:
    variants = {
        # The same pixels shown the other way round.
        "monochrome1": variant(CT, PhotometricInterpretation="MONOCHROME1"),
        # A VOI LUT that maps stored values 0..2047 (rescaled -1024..1023) to 0..255 in reverse, 8 bits per entry.
        "voi_lut": variant(CT, VOILUTSequence=[lut_item([2048, -1024, 8], [255 - i // 8 for i in range(2048)])]),
        # A Modality LUT instead of Rescale Slope/Intercept: stored value v becomes v // 16 (0..255 for 0..4095).
        "modality_lut": variant(
            CT, ModalityLUTSequence=[lut_item([4096, 0, 16], [i // 16 for i in range(4096)])], ModalityLUTType="US"
        ),
    }
    parts = [p.read_bytes() for p in FILES] + list(variants.values())
    response = httpx.post(session_server.dicomweb + "/studies", content=multipart_body(parts), headers=stow_headers())
    assert response.status_code in (200, 202), response.text  # an earlier module may have stored some already
    return Stored(session_server, variants)


def image(response: httpx.Response, media_type: str = "image/png") -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    return Image.open(io.BytesIO(response.content))


def pixels(response: httpx.Response, media_type: str = "image/png") -> np.ndarray:
    return np.asarray(image(response, media_type)).astype(np.float64)


def modality_values(path: Path | bytes, frame: int = 1) -> np.ndarray:
    ds = pydicom.dcmread(io.BytesIO(path) if isinstance(path, bytes) else path)
    raw = ds.pixel_array if int(ds.get("NumberOfFrames") or 1) == 1 else ds.pixel_array[frame - 1]
    return raw.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, output 0..255."""
    c, w = center - 0.5, width - 1
    out = ((values - c) / w + 0.5) * 255
    out[values <= c - w / 2] = 0
    out[values > c + w / 2] = 255
    return out


def mean_difference(received: np.ndarray, expected: np.ndarray) -> float:
    assert received.shape == expected.shape
    return float(np.abs(received - expected).mean())


class TestRenderedInstance:
    """One instance rendered: pixel values, parameters, photometric interpretations."""

    def test_png_is_min_max_window(self, stored: Stored) -> None:
        """CT_small has no window: its values from minimum to maximum span 0..255 (PNG, so only rounding differs)."""
        received = pixels(httpx.get(stored.url(CT, "/rendered"), headers={"Accept": "image/png"}))
        values = modality_values(CT)
        expected = (values - values.min()) / (values.max() - values.min()) * 255
        assert received.shape == (128, 128)
        assert np.abs(received - expected).max() <= 0.5 + 1e-9

    def test_jpeg_is_the_default(self, stored: Stored) -> None:
        """No Accept: JPEG, 8-bit grayscale, close to the same values (compression error allowed)."""
        rendered = image(httpx.get(stored.url(CT, "/rendered")), "image/jpeg")
        assert rendered.format == "JPEG" and rendered.mode == "L" and rendered.size == (128, 128)
        values = modality_values(CT)
        expected = (values - values.min()) / (values.max() - values.min()) * 255
        assert mean_difference(np.asarray(rendered, dtype=np.float64), expected) < 2.0

    def test_instance_window(self, stored: Stored) -> None:
        """MR_small's own Window Center/Width (600/1600), big endian file."""
        received = pixels(httpx.get(stored.url(MR_BIG_ENDIAN, "/rendered"), headers={"Accept": "image/png"}))
        assert mean_difference(received, linear(modality_values(MR_BIG_ENDIAN), 600, 1600)) < 0.51

    @pytest.mark.parametrize("function", ["linear", "linear-exact", "sigmoid"])
    def test_window_parameter(self, stored: Stored, function: str) -> None:
        """window=center,width,function (PS3.18 §8.3.5.1.4) replaces the instance's VOI."""
        url = stored.url(CT, f"/rendered?window=40,400,{function}")
        received = pixels(httpx.get(url, headers={"Accept": "image/png"}))
        values = modality_values(CT)
        if function == "linear":
            expected = linear(values, 40, 400)
        elif function == "linear-exact":
            expected = np.clip((values - 40) / 400 + 0.5, 0, 1) * 255
        else:
            expected = 255 / (1 + np.exp(-4 * (values - 40) / 400))
        assert mean_difference(received, expected) < 0.51
        default = pixels(httpx.get(stored.url(CT, "/rendered"), headers={"Accept": "image/png"}))
        assert mean_difference(received, default) > 10

    def test_window_without_function_is_linear(self, stored: Stored) -> None:
        """window=center,width is the linear function."""
        two = httpx.get(stored.url(CT, "/rendered?window=40,400&accept=image/png"))
        three = httpx.get(stored.url(CT, "/rendered?window=40,400,linear&accept=image/png"))
        assert two.content == three.content

    def test_viewport(self, stored: Stored) -> None:
        """viewport=vw,vh fits the image inside, keeping its aspect ratio, scaling down or up."""
        assert image(httpx.get(stored.url(CT, "/rendered?viewport=64,32")), "image/jpeg").size == (32, 32)
        assert image(httpx.get(stored.url(CT, "/rendered?viewport=300,256")), "image/jpeg").size == (256, 256)
        # JPEG2000.dcm is 256 columns by 1024 rows.
        assert image(httpx.get(stored.url(JPEG2000, "/rendered?viewport=100,100")), "image/jpeg").size == (25, 100)

    def test_quality(self, stored: Stored) -> None:
        """quality=1..100 sets the JPEG quality: lower is smaller and further from the source."""
        low = httpx.get(stored.url(CT, "/rendered?quality=5"))
        high = httpx.get(stored.url(CT, "/rendered?quality=100"))
        assert len(low.content) < len(high.content) / 2
        reference = pixels(httpx.get(stored.url(CT, "/rendered?accept=image/png")))
        assert mean_difference(pixels(low, "image/jpeg"), reference) > mean_difference(
            pixels(high, "image/jpeg"), reference
        )

    @pytest.mark.parametrize("media_type", ["image/jpeg", "image/png", "image/gif"])
    def test_media_types(self, stored: Stored, media_type: str) -> None:
        """JPEG, PNG and GIF, by the Accept header or the accept query parameter."""
        by_header = image(httpx.get(stored.url(CT, "/rendered"), headers={"Accept": media_type}), media_type)
        by_query = httpx.get(stored.url(CT, f"/rendered?accept={media_type}"), headers={"Accept": "image/jpeg"})
        assert image(by_query, media_type).format == by_header.format == media_type.split("/")[1].upper()

    def test_monochrome1_is_inverted(self, stored: Stored) -> None:
        """MONOCHROME1: the minimum is white. The same pixels as MONOCHROME2 come out inverted."""
        inverted = pixels(httpx.get(stored.url(stored.variants["monochrome1"], "/rendered?accept=image/png")))
        normal = pixels(httpx.get(stored.url(CT, "/rendered?accept=image/png")))
        assert np.abs(inverted - (255 - normal)).max() <= 1

    def test_monochrome1_cr(self, stored: Stored) -> None:
        """A real MONOCHROME1 CR with Rescale Slope 0.684 and window 1600/2800."""
        received = pixels(httpx.get(stored.url(MONOCHROME1_CR, "/rendered?accept=image/png")))
        expected = 255 - linear(modality_values(MONOCHROME1_CR), 1600, 2800)
        assert mean_difference(received, expected) < 0.51

    def test_voi_lut_sequence(self, stored: Stored) -> None:
        """Without a window, the VOI LUT Sequence maps the values (here a reversing LUT)."""
        received = pixels(httpx.get(stored.url(stored.variants["voi_lut"], "/rendered?accept=image/png")))
        values = np.clip(modality_values(CT), -1024, 1023)
        expected = (255 - (values + 1024) // 8) / 255 * 255
        assert mean_difference(received, expected) < 0.51

    def test_modality_lut_sequence(self, stored: Stored) -> None:
        """A Modality LUT Sequence replaces Rescale Slope/Intercept before the VOI (min/max here)."""
        received = pixels(httpx.get(stored.url(stored.variants["modality_lut"], "/rendered?accept=image/png")))
        values = pydicom.dcmread(CT).pixel_array.astype(np.float64) // 16
        expected = (values - values.min()) / (values.max() - values.min()) * 255
        assert mean_difference(received, expected) < 0.51

    @pytest.mark.parametrize("path", [JPEG_BASELINE, RGB], ids=lambda p: p.name)
    def test_colour(self, stored: Stored, path: Path) -> None:
        """Colour (YBR_FULL JPEG converted by pydicom, native RGB) comes out RGB, unwindowed."""
        rendered = image(httpx.get(stored.url(path, "/rendered?accept=image/png&window=0,1")))
        assert rendered.mode == "RGB"
        expected = pydicom.dcmread(path).pixel_array.astype(np.float64)
        assert mean_difference(np.asarray(rendered, dtype=np.float64), expected) < 0.01

    @pytest.mark.parametrize("path", [CT, RGB], ids=lambda p: p.name)
    def test_jpeg_is_the_png_compressed(self, stored: Stored, path: Path) -> None:
        """The JPEG (libjpeg-turbo through simplejpeg) decodes to the PNG's
        pixels within the compression error, grayscale as L and colour as RGB."""
        jpeg = image(
            httpx.get(stored.url(path, "/rendered?quality=95"), headers={"Accept": "image/jpeg"}), "image/jpeg"
        )
        png = pixels(httpx.get(stored.url(path, "/rendered"), headers={"Accept": "image/png"}))
        assert jpeg.mode == ("RGB" if png.ndim == 3 else "L")
        # Colour is subsampled 4:2:0 (as Pillow does by default): sharp colour edges cost a little more.
        assert mean_difference(np.asarray(jpeg, dtype=np.float64), png) < (3.0 if png.ndim == 3 else 1.0)

    def test_palette_colour(self, stored: Stored) -> None:
        """PALETTE COLOR through its 16-bit LUTs."""
        rendered = image(httpx.get(stored.url(PALETTE, "/rendered?accept=image/png")))
        assert rendered.mode == "RGB" and rendered.size == (800, 350)
        ds = pydicom.dcmread(PALETTE)
        expected = apply_color_lut(ds.pixel_array, ds).astype(np.float64) / 257
        assert mean_difference(np.asarray(rendered, dtype=np.float64), expected) < 0.51

    @pytest.mark.parametrize("path", [DEFLATED, JPEG2000], ids=lambda p: p.name)
    def test_compressed_and_deflated(self, stored: Stored, path: Path) -> None:
        """JPEG 2000 is decoded with the installed plugin; a deflated file is read whole."""
        ds = pydicom.dcmread(path)
        assert image(httpx.get(stored.url(path, "/rendered")), "image/jpeg").size == (ds.Columns, ds.Rows)


class TestFrames:
    """frames/{list}/rendered of a 30-frame JPEG ultrasound clip."""

    def test_frame_10_is_frame_10(self, stored: Stored) -> None:
        """Frame 10 differs from frame 1 and matches pydicom's 10th frame."""
        first = pixels(httpx.get(stored.url(MULTIFRAME_US, "/frames/1/rendered?accept=image/png")))
        tenth = pixels(httpx.get(stored.url(MULTIFRAME_US, "/frames/10/rendered?accept=image/png")))
        assert mean_difference(first, tenth) > 1
        expected = pydicom.dcmread(MULTIFRAME_US).pixel_array[9].astype(np.float64)
        assert mean_difference(tenth, expected) < 0.01

    def test_list_renders_its_first_frame(self, stored: Stored) -> None:
        """A single image for a frame list is its first frame; the instance's is frame 1."""
        listed = httpx.get(stored.url(MULTIFRAME_US, "/frames/10,1/rendered?accept=image/png"))
        tenth = httpx.get(stored.url(MULTIFRAME_US, "/frames/10/rendered?accept=image/png"))
        assert listed.content == tenth.content
        whole = httpx.get(stored.url(MULTIFRAME_US, "/rendered?accept=image/png"))
        assert whole.content == httpx.get(stored.url(MULTIFRAME_US, "/frames/1/rendered?accept=image/png")).content

    def test_multipart_frames(self, stored: Stored) -> None:
        """Accept multipart/related; type="image/png": one part per listed frame, in the order listed."""
        accept = 'multipart/related; type="image/png"'
        response = httpx.get(stored.url(MULTIFRAME_US, "/frames/3,1,2/rendered"), headers={"Accept": accept})
        assert response.status_code == 200
        decoded = MultipartDecoder(response.content, response.headers["content-type"])
        bodies = [p.content for p in decoded.parts]
        assert [p.headers[b"Content-Type"] for p in decoded.parts] == [b"image/png"] * 3
        single = [
            httpx.get(stored.url(MULTIFRAME_US, f"/frames/{n}/rendered?accept=image/png")).content for n in (3, 1, 2)
        ]
        assert bodies == single


@dataclass
class Study:
    """A study whose first series is an SR, then five CT instances, then two."""

    study: str
    series: list[str]
    instances: list[bytes]  # the five of the second series, by Instance Number


@pytest.fixture(scope="module")
def study(stored: Stored) -> Study:
    study_uid, sr_series, ct_series, other_series = (generate_uid() for _ in range(4))
    sr = variant(SR, StudyInstanceUID=study_uid, SeriesInstanceUID=sr_series, SeriesNumber=1)
    # Each CT instance is flat at 100 x its Instance Number; window 300/600 makes each a different grey.
    instances = [
        ct_instance(
            study_uid,
            ct_series,
            size=16,
            SeriesNumber=2,
            InstanceNumber=n,
            PixelData=np.full((16, 16), 100 * n, dtype="<u2").tobytes(),
            WindowCenter=300,
            WindowWidth=600,
        )
        for n in range(1, 6)
    ]
    others = [ct_instance(study_uid, other_series, size=16, SeriesNumber=3, InstanceNumber=n) for n in (1, 2)]
    shuffled = instances[:]
    random.Random(7).shuffle(shuffled)  # stored out of order: the order comes from Instance Number
    body = multipart_body([sr, *shuffled, *others])
    response = httpx.post(stored.server.dicomweb + "/studies", content=body, headers=stow_headers())
    assert response.status_code == 200, response.text
    return Study(study_uid, [sr_series, ct_series, other_series], instances)


class TestStudyAndSeries:
    """Study and series rendered: a representative instance, or every instance as multipart."""

    def grey(self, response: httpx.Response) -> float:
        return float(pixels(response).mean())

    def test_series_is_its_middle_instance(self, stored: Stored, study: Study) -> None:
        """The middle instance by Instance Number (the third of five), whatever the order stored."""
        base = f"{stored.server.dicomweb}/studies/{study.study}"
        series = httpx.get(f"{base}/series/{study.series[1]}/rendered?accept=image/png")
        third = httpx.get(stored.url(study.instances[2], "/rendered?accept=image/png"))
        assert series.content == third.content
        assert self.grey(series) == round(((300 - 299.5) / 599 + 0.5) * 255)

    def test_study_passes_over_series_without_pixels(self, stored: Stored, study: Study) -> None:
        """The study's first series is an SR: the representative comes from the next series."""
        base = f"{stored.server.dicomweb}/studies/{study.study}"
        rendered = httpx.get(f"{base}/rendered?accept=image/png")
        assert rendered.content == httpx.get(f"{base}/series/{study.series[1]}/rendered?accept=image/png").content

    def test_multipart_series_and_study(self, stored: Stored, study: Study) -> None:
        """multipart/related: one part per instance with pixel data, in Instance Number order; the SR left out."""
        accept = 'multipart/related; type="image/png"'
        base = f"{stored.server.dicomweb}/studies/{study.study}"
        series = httpx.get(f"{base}/series/{study.series[1]}/rendered", headers={"Accept": accept})
        decoded = MultipartDecoder(series.content, series.headers["content-type"])
        greys = [float(np.asarray(Image.open(io.BytesIO(p.content))).mean()) for p in decoded.parts]
        assert greys == sorted(greys) and len(set(greys)) == 5
        whole = httpx.get(f"{base}/rendered", headers={"Accept": accept})
        assert len(MultipartDecoder(whole.content, whole.headers["content-type"]).parts) == 7


class TestThumbnail:
    """Thumbnails: small, one image, cached on disk."""

    @pytest.mark.parametrize(
        ("path", "size"), [(CT, (128, 128)), (JPEG2000, (32, 128)), (PALETTE, (128, 56))], ids=lambda v: str(v)
    )
    def test_size(self, stored: Stored, path: Path, size: tuple[int, int]) -> None:
        """An instance's thumbnail fits 128 x 128, keeping its aspect ratio."""
        assert image(httpx.get(stored.url(path, "/thumbnail")), "image/jpeg").size == size

    def test_viewport_and_frames(self, stored: Stored) -> None:
        """viewport sets the size; a frame list's thumbnail is its first frame."""
        assert image(httpx.get(stored.url(CT, "/thumbnail?viewport=48,64")), "image/jpeg").size == (48, 48)
        tenth = httpx.get(stored.url(MULTIFRAME_US, "/frames/10/thumbnail?accept=image/png"))
        first = httpx.get(stored.url(MULTIFRAME_US, "/thumbnail?accept=image/png"))
        assert image(tenth).size == (128, 96) and tenth.content != first.content

    def test_cached_after_first_request(self, stored: Stored, study: Study) -> None:
        """The first request writes the cache file; later ones are served from it."""
        cache = stored.server.data_dir / "cache" / "thumbnails" / study.study
        assert not list(cache.glob("*"))
        url = f"{stored.server.dicomweb}/studies/{study.study}/series/{study.series[1]}/thumbnail?accept=image/jpeg"
        first = httpx.get(url)
        assert image(first, "image/jpeg").size == (128, 128)
        [entry] = cache.glob("*.jpeg")
        assert entry.read_bytes() == first.content
        sop = pydicom.dcmread(io.BytesIO(study.instances[2]), stop_before_pixels=True).SOPInstanceUID
        assert entry.name.startswith(sop + ".")
        entry.write_bytes(b"from the cache")
        assert httpx.get(url).content == b"from the cache"
        study_thumbnail = httpx.get(f"{stored.server.dicomweb}/studies/{study.study}/thumbnail?accept=image/jpeg")
        assert study_thumbnail.content == b"from the cache"  # the same representative instance and parameters
        assert image(httpx.get(url + "&viewport=64,64"), "image/jpeg").size == (64, 64)
        assert len(list(cache.glob("*.jpeg"))) == 2  # other parameters, another entry

    def test_thumbnail_of_sr_is_406(self, stored: Stored) -> None:
        """An SR has no image to show."""
        response = httpx.get(stored.url(SR, "/thumbnail"))
        assert response.status_code == 406 and "no pixel data" in response.json()["detail"]


class TestErrors:
    """400 for bad parameters (naming them), 404 for unknown UIDs, 406 for what cannot be offered."""

    @pytest.mark.parametrize(
        ("query", "named"),
        [
            ("window=abc", "window"),
            ("window=40", "window"),
            ("window=40,0", "window"),
            ("window=40,0.5,linear", "window"),
            ("window=40,400,cubic", "window"),
            ("window=nan,400", "window"),
            ("viewport=0,10", "viewport"),
            ("viewport=a,b", "viewport"),
            ("viewport=10", "viewport"),
            ("viewport=10,10,0,0,5,5", "viewport"),
            ("viewport=100000,10", "viewport"),
            ("quality=0", "quality"),
            ("quality=101", "quality"),
            ("quality=high", "quality"),
        ],
    )
    def test_bad_parameter_is_400(self, stored: Stored, query: str, named: str) -> None:
        """The detail names the parameter."""
        response = httpx.get(stored.url(CT, f"/rendered?{query}"))
        assert response.status_code == 400
        assert response.json()["detail"].startswith(named)

    def test_annotation_is_ignored(self, stored: Stored) -> None:
        """annotation=patient is accepted; nothing is burned in."""
        plain = httpx.get(stored.url(CT, "/rendered?accept=image/png"))
        assert httpx.get(stored.url(CT, "/rendered?accept=image/png&annotation=patient,technique")).content == (
            plain.content
        )

    @pytest.mark.parametrize("frames", ["0", "31", "1,1", "a"])
    def test_bad_frames_are_400(self, stored: Stored, frames: str) -> None:
        """Frame numbers outside 1..30 or a malformed list."""
        response = httpx.get(stored.url(MULTIFRAME_US, f"/frames/{frames}/rendered"))
        assert response.status_code == 400 and "frame" in response.json()["detail"]
        multipart = {"Accept": 'multipart/related; type="image/jpeg"'}
        assert httpx.get(stored.url(MULTIFRAME_US, f"/frames/{frames}/rendered"), headers=multipart).status_code == 400

    @pytest.mark.parametrize("suffix", ["/rendered", "/thumbnail", "/frames/1/rendered"])
    def test_unknown_is_404(self, stored: Stored, suffix: str) -> None:
        """An unknown instance is 404 naming it; unknown series and studies too."""
        ds = pydicom.dcmread(CT, stop_before_pixels=True)
        base = f"{stored.server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        response = httpx.get(f"{base}/instances/1.2.3.4{suffix}")
        assert response.status_code == 404 and "1.2.3.4" in response.json()["detail"]
        assert httpx.get(f"{stored.server.dicomweb}/studies/1.2.3.5/thumbnail").status_code == 404
        assert (
            httpx.get(f"{stored.server.dicomweb}/studies/{ds.StudyInstanceUID}/series/1.2.6/rendered").status_code
            == 404
        )

    def test_bad_uid_is_400(self, stored: Stored) -> None:
        """A UID that is not a UID."""
        assert httpx.get(f"{stored.server.dicomweb}/studies/x.y/rendered").status_code == 400

    @pytest.mark.parametrize(
        "headers", [{"Accept": "application/dicom"}, {"Accept": "image/jp2"}, {"Accept": "image/jpeg;q=0, image/webp"}]
    )
    def test_unacceptable_is_406(self, stored: Stored, headers: dict[str, str]) -> None:
        """Only JPEG, PNG and GIF are offered."""
        response = httpx.get(stored.url(CT, "/rendered"), headers=headers)
        assert response.status_code == 406 and "image/jpeg" in response.json()["detail"]
        assert httpx.get(stored.url(CT, "/thumbnail?accept=text/html")).status_code == 406

    def test_sr_is_406(self, stored: Stored) -> None:
        """An instance without pixel data has no rendered image: 406 saying so."""
        response = httpx.get(stored.url(SR, "/rendered"))
        assert response.status_code == 406
        assert "has no pixel data" in response.json()["detail"]

    def test_missing_file_is_500(self, server_factory: object) -> None:
        """A stored file gone from the disk: 500, logged; the server keeps serving."""
        server: LiveServer = server_factory()  # type: ignore[operator]
        response = httpx.post(
            server.dicomweb + "/studies", content=multipart_body([CT.read_bytes()]), headers=stow_headers()
        )
        assert response.status_code == 200
        (server.data_dir / server.db.value("SELECT file_path FROM instance")).unlink()
        url = Stored(server, {}).url(CT, "/rendered")
        response = httpx.get(url)
        assert response.status_code == 500 and "missing" in response.json()["detail"]
        assert httpx.get(server.url + "/healthz").status_code == 200


class TestLookupTable:
    """display_pixels looks integer pixels up in a table of the pipeline's values: exactly the per-pixel result."""

    @pytest.mark.parametrize("path", readable_test_files(), ids=lambda p: p.name)
    @pytest.mark.parametrize("window", [None, Window(40, 400, "linear"), Window(100, 50, "sigmoid")], ids=str)
    def test_same_as_per_pixel(self, path: Path, window: Window | None) -> None:
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except Exception:
            return  # no decodable pixel data: nothing to render
        if pixels.ndim != 2 or pixels.dtype.kind not in "iu" or pixels.dtype.itemsize > 2:
            return  # one frame of grayscale integers only (what the table covers)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        if photometric not in ("MONOCHROME1", "MONOCHROME2") or "ModalityLUTSequence" in ds:
            return
        np.testing.assert_array_equal(
            display_pixels(pixels, ds, window), grayscale(pixels, ds, window, photometric), err_msg=path.name
        )


def _native_grayscale_files() -> list[Path]:
    """pydicom's test files whose frames native_frame reads: native little endian, one sample, 8 or 16 bits."""
    found = []
    for path in readable_test_files():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if (
            ds.file_meta.get("TransferSyntaxUID") in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
            and ds.get("SamplesPerPixel", 1) == 1
            and ds.get("BitsAllocated") in (8, 16)
            and indexed(path) is not None
        ):
            found.append(path)
    return found


class TestNativeFrame:
    """rendering.native_frame: a native frame read at the location recorded at store time is pydicom's pixel array
    of that frame, and the rendered endpoints read it so."""

    @pytest.mark.parametrize("path", _native_grayscale_files(), ids=lambda p: p.name)
    def test_same_as_pydicom(self, path: Path) -> None:
        index = indexed(path)
        assert index is not None
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for number in sorted({1, len(index)}):
            pixels = native_frame(path, index[number - 1], header)
            if pixels is None:  # a file shorter than its pixel data (MR_truncated): pydicom cannot read it either
                with pytest.raises(ValueError):
                    pixel_array(path, index=number - 1)
                continue
            np.testing.assert_array_equal(pixels, pixel_array(path, index=number - 1), err_msg=f"frame {number}")

    def test_the_files_include_several_kinds(self) -> None:
        """Signed and unsigned, 8 and 16 bits and implicit VR are among those files (multi-frame ones are not: see
        test_multi_frame)."""
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in _native_grayscale_files()]
        assert {(ds.PixelRepresentation, ds.BitsAllocated) for ds in headers} >= {(0, 8), (0, 16), (1, 16)}
        assert any(ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian for ds in headers)

    def test_multi_frame(self, tmp_path: Path) -> None:
        """Each frame of a three-frame 8-bit instance, read at its own location."""
        frames = np.random.default_rng(5).integers(0, 256, (3, 16, 24), dtype=np.uint8)
        path = tmp_path / "three.dcm"
        ds = pydicom.dcmread(CT)
        ds.Rows, ds.Columns, ds.NumberOfFrames = 16, 24, 3
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = frames.tobytes()
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
        index = indexed(path)
        assert index is not None and len(index) == 3
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for number in (1, 2, 3):
            np.testing.assert_array_equal(native_frame(path, index[number - 1], header), frames[number - 1])

    @pytest.mark.parametrize("signed", [True, False])
    def test_unused_high_bits(self, tmp_path: Path, signed: bool) -> None:
        """12 bits stored in 16 with junk above them: cleared (unsigned) or sign-extended (signed), as pydicom."""
        rng = np.random.default_rng(3)
        words = rng.integers(0, 65536, (32, 48), dtype=np.uint16)
        path = tmp_path / "twelve.dcm"
        ds = pydicom.dcmread(CT)
        ds.Rows, ds.Columns, ds.BitsStored, ds.HighBit = 32, 48, 12, 11
        ds.PixelRepresentation = 1 if signed else 0
        ds.PixelData = words.tobytes()
        ds.save_as(path, enforce_file_format=True)
        index = indexed(path)
        assert index is not None
        pixels = native_frame(path, index[0], pydicom.dcmread(path, stop_before_pixels=True))
        assert pixels is not None
        np.testing.assert_array_equal(pixels, pixel_array(path))
        assert pixels.min() >= (-2048 if signed else 0) and pixels.max() <= (2047 if signed else 4095)

    @pytest.mark.parametrize("large", ["", "private value", "VOI LUT"])
    def test_header_parsed_once(self, stored: Stored, monkeypatch: pytest.MonkeyPatch, large: str) -> None:
        """Other windows and sizes of the same instance reuse its parsed header (a stored file never changes). Only
        its group 0028 is kept: a large value elsewhere in the header is not held in memory; a header whose own
        values are large (a 16-bit VOI LUT) is parsed each time instead of kept."""
        from dicomweb import rendering

        parsed: list[object] = []
        dcmread = pydicom.dcmread

        def counting(*args: Any, **kwargs: Any) -> Any:
            parsed.append(args[0])
            return dcmread(*args, **kwargs)

        monkeypatch.setattr(rendering, "dcmread", counting)
        instance = ct_instance(size=32)
        if large:
            ds = pydicom.dcmread(io.BytesIO(instance))
            if large == "private value":
                ds.add_new(0x00091010, "OB", b"\x00" * 100_000)  # before the pixel data
                ds.add_new(0x00090010, "LO", "TEST")
            else:
                lut = Dataset()
                lut.LUTDescriptor = [0, 0, 16]  # 65,536 entries
                lut.add_new(0x00283006, "US", list(range(65536)))  # LUT Data
                ds.VOILUTSequence = [lut]
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            instance = buffer.getvalue()
        store(stored.server, [instance])
        for query in ("window=40,400", "window=100,50,sigmoid", "viewport=16,16"):
            response = httpx.get(stored.url(instance, f"/rendered?{query}"), headers={"Accept": "image/png"})
            assert response.status_code == 200, query
        assert len(parsed) == (3 if large == "VOI LUT" else 1)
        if large != "VOI LUT":
            kept = rendering.pixel_header(Path(str(parsed[0])))
            assert len(parsed) == 1
            assert {tag.group for tag in kept.keys()} == {0x0028}
            assert kept.Rows == 32 and kept.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian

    def test_rendered_reads_the_recorded_location(self, stored: Stored, monkeypatch: pytest.MonkeyPatch) -> None:
        """A CT slice is rendered from the bytes at its recorded location: pydicom's pixel reading is not used."""
        from dicomweb import rendering

        def no_pixel_array(*args: object, **kwargs: object) -> None:
            raise AssertionError("pixel_array was called")

        monkeypatch.setattr(rendering, "pixel_array", no_pixel_array)
        response = httpx.get(stored.url(CT, "/rendered"), headers={"Accept": "image/png"})
        assert response.status_code == 200
        shown = np.asarray(Image.open(io.BytesIO(response.content)))
        ds = pydicom.dcmread(CT)
        expected = display_pixels(ds.pixel_array, ds, None)
        np.testing.assert_array_equal(shown, expected)


@pytest.mark.parametrize("shape", [(40, 60), (40, 60, 3)], ids=["grayscale", "colour"])
def test_jpeg_encoder(shape: tuple[int, ...]) -> None:
    """rendering.encode's JPEG (libjpeg-turbo through simplejpeg) decodes to its pixels, within the compression error,
    as grayscale or RGB."""
    from dicomweb import rendering

    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    smooth = (x * 3 + y * 2).astype(np.uint8)
    source = smooth if len(shape) == 2 else np.stack([smooth, smooth[::-1], 255 - smooth], axis=-1)
    decoded = Image.open(io.BytesIO(rendering.encode(source, rendering.Rendering(quality=95), "image/jpeg")))
    assert decoded.format == "JPEG" and decoded.mode == ("L" if len(shape) == 2 else "RGB")
    assert mean_difference(np.asarray(decoded, dtype=np.float64), source.astype(np.float64)) < 2.0
