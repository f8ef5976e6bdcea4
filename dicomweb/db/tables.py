"""The archive's tables as SQLAlchemy Core ``Table`` objects, for composing SQL (db/search.py), never for DDL.

``schema.sql`` alone creates and migrates the database (defaults, indexes and triggers are only there). These
mirror its columns (name, type, nullability, keys), and tests/test_tables.py compares them with a database made
from it, so the two cannot drift. The reporting tables (``radiology_*``) are reporting/'s.
"""

from __future__ import annotations

import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    Table,
    Text,
    Time,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID

metadata = MetaData()


def _pk() -> Column[int]:
    return Column("pk", BigInteger, Identity(always=True), primary_key=True)


def _timestamp(name: str) -> Column[datetime.datetime]:
    return Column(name, TIMESTAMP(timezone=True), nullable=False)


schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    _timestamp("applied_at"),
)

patient = Table(
    "patient",
    metadata,
    _pk(),
    Column("patient_id", Text, nullable=False),
    Column("issuer_of_patient_id", Text, nullable=False),
    Column("patient_name", Text),
    Column("patient_name_folded", Text),  # lower case, accents removed (attributes.normalize_name)
    Column("patient_birth_date", Date),
    Column("patient_sex", Text),
    _timestamp("created_at"),
)

# Every suffix (up to 32 characters) of each folded patient name, kept by a trigger: infix wildcards and fuzzy
# matching become btree prefix scans (schema.sql).
patient_name_suffix = Table(
    "patient_name_suffix",
    metadata,
    Column("patient_pk", BigInteger, ForeignKey("patient.pk", ondelete="CASCADE"), nullable=False),
    Column("suffix", Text, nullable=False),
    Column("word_start", Boolean, nullable=False),
)

study = Table(
    "study",
    metadata,
    _pk(),
    Column("patient_pk", BigInteger, ForeignKey("patient.pk"), nullable=False),
    Column("study_instance_uid", Text, nullable=False, unique=True),
    Column("study_date", Date),
    Column("study_time", Time),
    Column("accession_number", Text),
    Column("referring_physician_name", Text),
    Column("referring_physician_name_folded", Text),
    Column("study_id", Text),
    Column("study_description", Text),
    Column("modalities_in_study", ARRAY(Text), nullable=False),
    Column("number_of_study_related_series", Integer, nullable=False),
    Column("number_of_study_related_instances", Integer, nullable=False),
    _timestamp("created_at"),
    _timestamp("updated_at"),
)

series = Table(
    "series",
    metadata,
    _pk(),
    Column("study_pk", BigInteger, ForeignKey("study.pk"), nullable=False),
    Column("series_instance_uid", Text, nullable=False, unique=True),
    Column("modality", Text),
    Column("series_number", Integer),
    Column("series_description", Text),
    Column("series_date", Date),
    Column("series_time", Time),
    Column("body_part_examined", Text),
    Column("performed_procedure_step_start_date", Date),
    Column("performed_procedure_step_start_time", Time),
    Column("scheduled_procedure_step_ids", ARRAY(Text), nullable=False),
    Column("requested_procedure_ids", ARRAY(Text), nullable=False),
    Column("number_of_series_related_instances", Integer, nullable=False),
    _timestamp("created_at"),
    _timestamp("updated_at"),
)

instance = Table(
    "instance",
    metadata,
    _pk(),
    Column("series_pk", BigInteger, ForeignKey("series.pk"), nullable=False),
    Column("sop_instance_uid", Text, nullable=False, unique=True),
    Column("sop_class_uid", Text, nullable=False),
    Column("instance_number", Integer),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("bits_allocated", Integer),
    Column("number_of_frames", Integer),
    Column("transfer_syntax_uid", Text, nullable=False),
    Column("file_path", Text, nullable=False),
    Column("file_size", BigInteger, nullable=False),
    Column("file_sha256", Text, nullable=False),
    Column("metadata", JSONB, nullable=False),  # DICOM JSON, BulkDataURIs relative to the DICOMweb base URL
    _timestamp("created_at"),
    Column("frame_index", JSONB),  # schema version 3 (frame_index.py)
)

audit_event = Table(
    "audit_event",
    metadata,
    _pk(),
    _timestamp("occurred_at"),
    Column("request_id", Text, nullable=False),
    Column("subject", Text),
    Column("roles", ARRAY(Text), nullable=False),
    Column("action", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("route", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("query", Text),
    Column("patient_id", Text),
    Column("study_instance_uid", Text),
    Column("series_instance_uid", Text),
    Column("sop_instance_uid", Text),
    Column("status", Integer, nullable=False),
    Column("client", Text),
)

dicom_node = Table(  # schema version 4 (dimse/nodes.py; its queries are db/nodes.py's)
    "dicom_node",
    metadata,
    Column("ae_title", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("port", Integer, nullable=False),
    Column("permissions", ARRAY(Text), nullable=False),
    Column("description", Text, nullable=False),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    Column("worklist_own_station", Boolean, nullable=False),  # schema version 5
)

performed_procedure_step = Table(  # schema version 5 (dimse/mpps.py; its queries are db/mpps.py's)
    "performed_procedure_step",
    metadata,
    Column("sop_instance_uid", Text, primary_key=True),
    Column("study_id", UUID),
    Column("status", Text, nullable=False),
    Column("calling_ae_title", Text, nullable=False),
    Column("station_ae_title", Text),
    Column("study_instance_uid", Text),
    Column("accession_number", Text),
    Column("patient_id", Text),
    Column("patient_name", Text),
    Column("procedure_step_id", Text),
    Column("description", Text),
    Column("start_date", Date),
    Column("start_time", Time),
    Column("end_date", Date),
    Column("end_time", Time),
    Column("discontinuation_reason", Text),
    Column("performed_series", JSONB, nullable=False),
    _timestamp("created_at"),
    _timestamp("updated_at"),
)

storage_commitment = Table(  # schema version 10 (dimse/commitment_reports.py; its queries are db/commitment.py's)
    "storage_commitment",
    metadata,
    _pk(),
    Column("transaction_uid", Text, nullable=False),
    Column("calling_ae_title", Text, nullable=False),
    Column("referenced_sop_sequence", JSONB, nullable=False),
    _timestamp("received_at"),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    _timestamp("next_attempt_at"),
    Column("claimed_by", Text),
    Column("lease_until", TIMESTAMP(timezone=True)),
    Column("last_error", Text),
    Column("event_type_id", Integer),
    Column("failed_instances", Integer),
    Column("reported_at", TIMESTAMP(timezone=True)),
)
