"""Transport-neutral services: the archive and plain values in, dataclasses out or transport-neutral errors raised.

What an HTTP endpoint (and later a DIMSE handler) calls after parsing its input, before shaping its own answer:
``store`` (STOW-RS, the reporting uploads, ``dicomweb import``), ``search`` (QIDO-RS), ``retrieve`` (WADO-RS, rendered,
WADO-URI) and ``delete``. Nothing here imports Starlette; ``dicomweb/errors.py`` maps their errors to HTTP statuses.
"""
