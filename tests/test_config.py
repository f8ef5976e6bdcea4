"""Settings: read from DICOMWEB_* variables, checked, and every one documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dicomweb.config import SETTINGS, Settings

README = Path(__file__).parent.parent / "README.md"


class TestSettings:
    """Settings.from_env."""

    def test_defaults(self) -> None:
        """With no variables set, every field has its documented default."""
        settings = Settings.from_env({})
        assert settings == Settings()
        assert settings.port == 8080 and settings.max_upload_bytes == 100 * 1024 * 1024

    def test_environment_overrides(self) -> None:
        """DICOMWEB_* variables are parsed into typed fields."""
        settings = Settings.from_env(
            {"DICOMWEB_PORT": "9000", "DICOMWEB_DATA_DIR": "/srv/pacs", "DICOMWEB_DUPLICATES": "overwrite"}
        )
        assert (settings.port, settings.data_dir, settings.duplicates) == (9000, Path("/srv/pacs"), "overwrite")

    def test_request_limits(self) -> None:
        """The STOW-RS part limits are read as integers."""
        settings = Settings.from_env({"DICOMWEB_MAX_PARTS": "50", "DICOMWEB_MAX_PART_HEADER_BYTES": "4096"})
        assert (settings.max_parts, settings.max_part_header_bytes) == (50, 4096)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("DICOMWEB_PORT", "eighty"),
            ("DICOMWEB_DUPLICATES", "maybe"),
            ("DICOMWEB_LOG_LEVEL", "x"),
            ("DICOMWEB_MAX_PARTS", "0"),
            ("DICOMWEB_MAX_PART_HEADER_BYTES", "-1"),
            ("DICOMWEB_MAX_UPLOAD_MB", "0"),
            ("DICOMWEB_DIMSE_UNKNOWN", "everything"),
            ("DICOMWEB_TIMEZONE", "Mars/Olympus_Mons"),
            ("DICOMWEB_TIMEZONE", "../etc"),
        ],
    )
    def test_invalid_values_name_the_variable(self, name: str, value: str) -> None:
        """A bad value is refused with an error naming the variable."""
        with pytest.raises(ValueError, match=name):
            Settings.from_env({name: value})

    def test_every_setting_is_a_field(self) -> None:
        """SETTINGS and the Settings dataclass declare the same names, with the same defaults."""
        assert {s.name for s in SETTINGS} == set(Settings.__dataclass_fields__)
        assert Settings.from_env({}) == Settings()


class TestReadme:
    """The README's settings table is complete."""

    def test_every_setting_documented(self) -> None:
        """Each DICOMWEB_* variable appears in the README's table with its default."""
        text = README.read_text()
        for setting in SETTINGS:
            row = re.search(rf"^\| `{setting.env}` \| ([^|]*) \|", text, re.MULTILINE)
            assert row is not None, f"{setting.env} is missing from the README"
            expected = f"`{setting.default}`" if setting.default else "(empty)"
            assert row.group(1).strip() == expected, setting.env

    def test_no_unknown_settings_documented(self) -> None:
        """The README documents no DICOMWEB_* variable that does not exist."""
        documented = set(re.findall(r"^\| `(DICOMWEB_[A-Z0-9_]+)`", README.read_text(), re.MULTILINE))
        assert documented == {s.env for s in SETTINGS}
