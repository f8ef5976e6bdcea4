"""The absolute base URL handed to clients (RetrieveURL, BulkDataURI)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from dicomweb.urls import base_url


def request(headers: dict[str, str], scheme: str = "http", server: tuple[str, int] = ("10.0.0.5", 8080)) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": scheme,
            "path": "/dicomweb/studies",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "server": server,
        }
    )


class TestBaseUrl:
    """Where the base URL comes from, in order."""

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({"Host": "pacs:8080"}, "http://pacs:8080/dicomweb"),
            # dicomweb-client 0.61 sends Host without the port: use the port the request arrived on, never 80.
            ({"Host": "localhost"}, "http://localhost:8080/dicomweb"),
            ({"Host": "[::1]:8080"}, "http://[::1]:8080/dicomweb"),
            (
                {"Host": "pacs:8080", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org"},
                "https://pacs.example.org/dicomweb",
            ),
            (
                {
                    "Host": "pacs:8080",
                    "X-Forwarded-Host": "gw.example.org",
                    "X-Forwarded-Port": "8443",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Prefix": "/pacs/",
                },
                "https://gw.example.org:8443/pacs/dicomweb",
            ),
            (
                {"Host": "pacs:8080", "Forwarded": 'for=1.2.3.4;proto=https;host="viewer.example.org", for=5.6.7.8'},
                "https://viewer.example.org/dicomweb",
            ),
            ({"Host": "pacs:8080", "Forwarded": "proto=http;host=gw:9000"}, "http://gw:9000/dicomweb"),
            ({}, "http://10.0.0.5:8080/dicomweb"),
        ],
    )
    def test_from_headers(self, headers: dict[str, str], expected: str) -> None:
        """Forwarded, then X-Forwarded-*, then Host, then the socket's address and port."""
        assert base_url(request(headers)) == expected

    def test_default_port_omitted(self) -> None:
        """A request that arrived on port 80 over http names no port."""
        assert base_url(request({"Host": "pacs"}, server=("10.0.0.5", 80))) == "http://pacs/dicomweb"

    def test_public_url_wins(self) -> None:
        """DICOMWEB_PUBLIC_URL overrides every header."""
        got = base_url(request({"Host": "x:1", "X-Forwarded-Host": "y"}), public_url="https://pacs.example.org/root/")
        assert got == "https://pacs.example.org/root/dicomweb"
