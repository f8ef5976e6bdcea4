-- The one database schema of the archive. Applied at start-up, in one transaction, to an empty database;
-- the version below is recorded in schema_version and checked at every start (dicomweb/db/pool.py).
-- schema_version: 1
--
-- Archive index: patient → study → series → instance. The attributes QIDO-RS must match and return
-- (PS3.18 Table 10.6.3-3/-4/-5) are typed, indexed columns; their keyword → column map is dicomweb/attributes.py.
-- Person names are kept as received (PN string, "Family^Given^...=Ideographic=Phonetic") and folded
-- (lower case, accents removed) in *_folded columns for case- and accent-insensitive matching.
-- Dates and times are typed (date, time); a value that does not parse is NULL here and kept in the metadata.

CREATE TABLE schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE patient (
    pk                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id              text NOT NULL DEFAULT '',
    issuer_of_patient_id    text NOT NULL DEFAULT '',
    patient_name            text,
    patient_name_folded     text,
    patient_birth_date      date,
    patient_sex             text,
    created_at              timestamptz NOT NULL DEFAULT now()
);
-- One row per identified patient; instances without a PatientID get a patient row per study.
CREATE UNIQUE INDEX patient_identity ON patient (patient_id, issuer_of_patient_id) WHERE patient_id <> '';
CREATE INDEX patient_name_folded ON patient (patient_name_folded text_pattern_ops);
CREATE INDEX patient_id_pattern ON patient (patient_id text_pattern_ops);

-- Every suffix (up to 32 characters) of each folded patient name, so that infix wildcards (PatientName=*mül*) and
-- fuzzy matching (each word starts a component) become btree prefix scans: pg_trgm is not available in the embedded
-- PostgreSQL. word_start marks suffixes that begin a name component (after ^, =, space or -). Kept by a trigger.
CREATE TABLE patient_name_suffix (
    patient_pk  bigint NOT NULL REFERENCES patient (pk) ON DELETE CASCADE,
    suffix      text NOT NULL,
    word_start  boolean NOT NULL
);
CREATE INDEX patient_name_suffix_prefix ON patient_name_suffix (suffix text_pattern_ops, word_start);
CREATE INDEX patient_name_suffix_patient ON patient_name_suffix (patient_pk);

CREATE FUNCTION patient_name_suffixes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO patient_name_suffix (patient_pk, suffix, word_start)
    SELECT DISTINCT NEW.pk, substr(NEW.patient_name_folded, i, 32),
           i = 1 OR substr(NEW.patient_name_folded, i - 1, 1) IN ('^', '=', ' ', '-')
    FROM generate_series(1, length(NEW.patient_name_folded)) AS i
    WHERE substr(NEW.patient_name_folded, i, 1) NOT IN ('^', '=', ' ', '-');
    RETURN NULL;
END
$$;
CREATE TRIGGER patient_name_suffixes AFTER INSERT ON patient
    FOR EACH ROW WHEN (NEW.patient_name_folded IS NOT NULL) EXECUTE FUNCTION patient_name_suffixes();

CREATE TABLE study (
    pk                                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_pk                          bigint NOT NULL REFERENCES patient (pk),
    study_instance_uid                  text NOT NULL UNIQUE,
    study_date                          date,
    study_time                          time,
    accession_number                    text,
    referring_physician_name            text,
    referring_physician_name_folded     text,
    study_id                            text,
    study_description                   text,
    -- Aggregates (PS3.18 Table 10.6.3-3 computed attributes), updated in the storing transaction.
    modalities_in_study                 text[] NOT NULL DEFAULT '{}',
    number_of_study_related_series      integer NOT NULL DEFAULT 0,
    number_of_study_related_instances   integer NOT NULL DEFAULT 0,
    created_at                          timestamptz NOT NULL DEFAULT now(),
    updated_at                          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX study_patient ON study (patient_pk);
-- The default QIDO order: newest study first, then UID.
CREATE INDEX study_date_order ON study (study_date DESC NULLS LAST, study_time DESC NULLS LAST, study_instance_uid);
CREATE INDEX study_accession_number ON study (accession_number text_pattern_ops);
CREATE INDEX study_referring_physician ON study (referring_physician_name_folded text_pattern_ops);
CREATE INDEX study_id_pattern ON study (study_id text_pattern_ops);
CREATE INDEX study_modalities ON study USING gin (modalities_in_study);

CREATE TABLE series (
    pk                                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_pk                                bigint NOT NULL REFERENCES study (pk),
    series_instance_uid                     text NOT NULL UNIQUE,
    modality                                text,
    series_number                           integer,
    series_description                      text,
    series_date                             date,
    series_time                             time,
    body_part_examined                      text,
    performed_procedure_step_start_date     date,
    performed_procedure_step_start_time     time,
    -- RequestAttributesSequence > ScheduledProcedureStepID / RequestedProcedureID, for sequence matching.
    scheduled_procedure_step_ids            text[] NOT NULL DEFAULT '{}',
    requested_procedure_ids                 text[] NOT NULL DEFAULT '{}',
    number_of_series_related_instances      integer NOT NULL DEFAULT 0,
    created_at                              timestamptz NOT NULL DEFAULT now(),
    updated_at                              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX series_study ON series (study_pk, series_number);
CREATE INDEX series_modality ON series (modality);
CREATE INDEX series_pps_start ON series (performed_procedure_step_start_date, performed_procedure_step_start_time);
CREATE INDEX series_scheduled_procedure_step_ids ON series USING gin (scheduled_procedure_step_ids);
CREATE INDEX series_requested_procedure_ids ON series USING gin (requested_procedure_ids);

CREATE TABLE instance (
    pk                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series_pk               bigint NOT NULL REFERENCES series (pk),
    sop_instance_uid        text NOT NULL UNIQUE,
    sop_class_uid           text NOT NULL,
    instance_number         integer,
    rows                    integer,
    columns                 integer,
    bits_allocated          integer,
    number_of_frames        integer,
    transfer_syntax_uid     text NOT NULL,
    -- The stored PS3.10 file: path relative to the data folder, size in bytes, SHA-256 of its bytes.
    file_path               text NOT NULL,
    file_size               bigint NOT NULL,
    file_sha256             text NOT NULL,
    -- The instance as DICOM JSON (PS3.18 Annex F), BulkDataURIs relative to the DICOMweb base URL.
    metadata                jsonb NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_series ON instance (series_pk, instance_number);
CREATE INDEX instance_sop_class ON instance (sop_class_uid);

-- Audit trail: one row per request that touches patient data (every route with a permission), written before the
-- answer leaves; if it cannot be written the request fails (dicomweb/audit.py).
CREATE TABLE audit_event (
    pk                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at             timestamptz NOT NULL DEFAULT now(),
    request_id              text NOT NULL,
    subject                 text,
    roles                   text[] NOT NULL DEFAULT '{}',
    action                  text NOT NULL,
    method                  text NOT NULL,
    route                   text NOT NULL,
    path                    text NOT NULL,
    query                   text,
    patient_id              text,
    study_instance_uid      text,
    series_instance_uid     text,
    sop_instance_uid        text,
    status                  integer NOT NULL,
    client                  text
);
CREATE INDEX audit_event_time ON audit_event (occurred_at DESC);
CREATE INDEX audit_event_subject ON audit_event (subject, occurred_at DESC);
CREATE INDEX audit_event_patient ON audit_event (patient_id, occurred_at DESC);
CREATE INDEX audit_event_study ON audit_event (study_instance_uid, occurred_at DESC);

INSERT INTO schema_version (version) VALUES (1);
