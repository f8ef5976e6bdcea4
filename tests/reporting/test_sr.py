"""reporting/sr.py without a server: tracking UIDs, person names, pixel spacing and the values computed from points."""

from __future__ import annotations

import math
import uuid

import pytest
from pydicom import Dataset

from reporting import sr


class TestValues:
    """What an annotation measures, from its points and the image's pixel spacing."""

    def test_tracking_uid(self) -> None:
        """The annotation's own UID if it has one, else 2.25.<its id as an integer> (PS3.5 §B.2)."""
        annotation_id = uuid.UUID("00000000-0000-0000-0000-000000000102")
        assert sr.tracking_uid({"id": annotation_id, "tracking_uid": None}) == "2.25.258"
        assert sr.tracking_uid({"id": annotation_id, "tracking_uid": "1.2.3"}) == "1.2.3"

    def test_person_name(self) -> None:
        """A subject is a family name with a trailing caret; PN delimiters in it do not split it."""
        assert sr.person_name("dr-a") == "dr-a^"
        assert sr.person_name("a^b\\c=d") == "a b c d^"

    def test_pixel_spacing(self) -> None:
        """Pixel Spacing from the image, else from an enhanced image's shared Pixel Measures; None when absent or
        not positive."""
        image = Dataset()
        assert sr.pixel_spacing(image) is None
        image.PixelSpacing = [0.5, 0.8]
        assert sr.pixel_spacing(image) == sr.Spacing(row=0.5, column=0.8)
        enhanced, measures, shared = Dataset(), Dataset(), Dataset()
        measures.PixelSpacing = [0.25, 0.25]
        shared.PixelMeasuresSequence = [measures]
        enhanced.SharedFunctionalGroupsSequence = [shared]
        assert sr.pixel_spacing(enhanced) == sr.Spacing(0.25, 0.25)
        image.PixelSpacing = [0, 1]
        assert sr.pixel_spacing(image) is None

    def test_lengths_and_areas(self) -> None:
        """x runs along columns (column spacing), y along rows (row spacing)."""
        spacing = sr.Spacing(row=2.0, column=0.5)
        assert sr.path_length([(0, 0), (4, 0), (4, 3)], spacing) == pytest.approx(2 + 6)
        assert sr.path_length([(0, 0), (3, 4)], None) == pytest.approx(5)
        square = [(0, 0), (10, 0), (10, 10), (0, 10)]
        assert sr.polygon_area(square, spacing) == pytest.approx(100)
        assert sr.polygon_area(square[::-1], None) == pytest.approx(100)
        assert math.isclose(sr.polygon_area([(0, 0), (1, 1), (2, 2)], None), 0)
