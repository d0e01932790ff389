"""The server-side TLS context for STARTTLS (RFC 3207)."""

from __future__ import annotations

import ssl


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A context for STARTTLS: TLS 1.2 or newer, the library's default ciphers.

    Raises OSError or ssl.SSLError when the files cannot be read or do not match;
    the caller reports it before any socket is opened.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file or None)
    return context
