"""Store Instances failure and warning reasons, as PS3.18 §10.5.3 (Table 10.5.3-2/-3) and PS3.4 Annex B name them.

STOW-RS reports, per instance, a FailureReason (0008,1197) or WarningReason (0008,1196) taken from the Storage
Service Class status codes (PS3.4 Annex B.2.3, Table B.2-1) and the general DIMSE statuses (PS3.7 Annex C).
"""

from __future__ import annotations

from enum import IntEnum


class FailureReason(IntEnum):
    """Why an instance of a STOW-RS request was not stored."""

    # PS3.7 Annex C general status "Processing failure": an error inside the archive (disk, database).
    PROCESSING_FAILURE = 0x0110
    # PS3.7 Annex C general status "Duplicate SOP Instance": the SOP Instance UID is stored already, with
    # other content (see DICOMWEB_DUPLICATES).
    DUPLICATE_SOP_INSTANCE = 0x0111
    # PS3.18 §10.5.3 / PS3.7 Annex C "Referenced SOP Class not supported".
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    # PS3.4 Table B.2-1 "Refused: Out of Resources" (A7xx): the disk is full.
    OUT_OF_RESOURCES = 0xA700
    # PS3.4 Table B.2-1 "Error: Data Set does not match SOP Class" (A9xx): a required attribute is missing or
    # invalid, or the instance belongs to another study than the request URL names (PS3.18 §10.5.1).
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    # PS3.4 Table B.2-1 "Error: Cannot understand" (Cxxx): the part is not a parsable DICOM PS3.10 file.
    CANNOT_UNDERSTAND = 0xC000
    # PS3.18 Table 10.5.3-2 "Referenced Transfer Syntax not supported".
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122


class WarningReason(IntEnum):
    """Why an instance was stored, but with a warning."""

    # PS3.4 Table B.2-1 "Coercion of Data Elements".
    COERCION_OF_DATA_ELEMENTS = 0xB000
    # PS3.4 Table B.2-1 "Elements Discarded".
    ELEMENTS_DISCARDED = 0xB006
    # PS3.4 Table B.2-1 "Data Set does not match SOP Class".
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xB007


class DimseStatus(IntEnum):
    """The other statuses the DIMSE services answer with (dicomweb/dimse/): success, the pending and cancel statuses
    of C-FIND, C-MOVE and C-GET, and their failures (PS3.4 Tables C.4-1, C.4-2 and C.4-3)."""

    # PS3.7 Annex C: success, of every DIMSE service.
    SUCCESS = 0x0000
    # PS3.4 Table C.4-1/-3 "Pending": a match, or sub-operations continuing.
    PENDING = 0xFF00
    # PS3.4 Table C.4-1/-3 "Cancel": matching or sub-operations terminated due to a C-CANCEL request.
    CANCEL = 0xFE00
    # PS3.4 Table C.4-1/-3 "Failed: Identifier does not match SOP Class": a key that cannot be read as asked.
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    # PS3.4 Table C.4-1 "Failed: Unable to process" (Cxxx).
    UNABLE_TO_PROCESS = 0xC000
    # PS3.7 Annex C general status "Refused: Not Authorized": the calling AE title may not ask for this (its node's
    # permissions, DICOMWEB_DIMSE_UNKNOWN).
    NOT_AUTHORIZED = 0x0124
    # PS3.4 Table C.4-2 "Refused: Move Destination unknown": the Move Destination is not a registered node, or it
    # cannot be reached.
    MOVE_DESTINATION_UNKNOWN = 0xA801
    # PS3.4 Table C.4-2/-3 "Refused: Out of Resources - Unable to calculate number of matches": the database is
    # not reachable.
    UNABLE_TO_CALCULATE_MATCHES = 0xA701
    # PS3.4 Table C.4-2/-3 "Warning: Sub-operations Complete - One or more Failures or Warnings".
    SUB_OPERATIONS_WITH_FAILURES = 0xB000
