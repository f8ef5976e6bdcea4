-- The one database schema of the archive. Applied at start-up, in one transaction, to an empty database;
-- the version below is recorded in schema_version and checked at every start (dicomweb/db/pool.py).
-- schema_version: 10
--
-- A database of an older version is brought up to date by the sections after its version: each section starts
-- with a line "-- migrate to version N" and ends by recording N. Sections only add; they never rewrite data.
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

-- migrate to version 2
-- The radiology workflow (reporting/): scheduled studies, their series, image annotations, reports and templates.
-- A workflow study names its archive study by StudyInstanceUID; series and images are the archive's (by UID), so
-- counts and sizes are read from the archive and cannot drift from it.

CREATE TABLE radiology_study (
    id                      uuid PRIMARY KEY,
    order_id                text,
    patient_id              text NOT NULL,
    patient_name            text,
    accession_number        text NOT NULL UNIQUE,
    study_instance_uid      text NOT NULL UNIQUE,
    modality                text NOT NULL,
    study_description       text,
    body_part               text,
    referring_physician     text,
    performing_technician   text,
    scheduled_at            timestamptz,
    study_date              date,
    status                  text NOT NULL DEFAULT 'scheduled'
                            CHECK (status IN ('scheduled', 'in_progress', 'completed', 'reported', 'cancelled')),
    created_by              text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX radiology_study_listing ON radiology_study (created_at DESC, id);
CREATE INDEX radiology_study_status ON radiology_study (status);
CREATE INDEX radiology_study_patient ON radiology_study (patient_id);
CREATE INDEX radiology_study_date ON radiology_study (study_date);

-- Series announced through the API before (or while) their images arrive; the archive's series table has the rest.
CREATE TABLE radiology_series (
    series_instance_uid     text PRIMARY KEY,
    study_id                uuid NOT NULL REFERENCES radiology_study (id) ON DELETE CASCADE,
    series_number           integer,
    modality                text NOT NULL,
    series_description      text,
    body_part               text,
    created_by              text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (study_id, series_number)
);

-- The first instance of a scheduled study moves it to in_progress, whichever way it arrives (STOW-RS, import, the
-- reporting API): matched by StudyInstanceUID, else by AccessionNumber, whose study then takes the archive's UID.
CREATE FUNCTION radiology_study_arrived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE radiology_study SET status = 'in_progress', updated_at = now()
     WHERE study_instance_uid = NEW.study_instance_uid AND status = 'scheduled';
    IF NOT FOUND AND coalesce(NEW.accession_number, '') <> '' THEN
        UPDATE radiology_study
           SET status = 'in_progress', study_instance_uid = NEW.study_instance_uid, updated_at = now()
         WHERE accession_number = NEW.accession_number AND status = 'scheduled'
           AND NOT EXISTS (SELECT 1 FROM radiology_study r WHERE r.study_instance_uid = NEW.study_instance_uid);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER radiology_study_arrived AFTER INSERT ON study
    FOR EACH ROW EXECUTE FUNCTION radiology_study_arrived();

CREATE TABLE radiology_annotation (
    id                      uuid PRIMARY KEY,
    sop_instance_uid        text NOT NULL,
    frame_number            integer CHECK (frame_number >= 1),
    type                    text NOT NULL CHECK (type IN ('text', 'arrow', 'circle', 'measurement', 'roi')),
    coordinates             jsonb NOT NULL,
    label                   text,
    color                   text,
    created_by              text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX radiology_annotation_image ON radiology_annotation (sop_instance_uid, created_at);

-- An image's annotations go with it. Checked at commit (a deferred constraint trigger), so that an instance
-- replaced under DICOMWEB_DUPLICATES=overwrite (deleted, then inserted again in one transaction) keeps them.
CREATE FUNCTION radiology_annotation_orphans() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM radiology_annotation a
     WHERE a.sop_instance_uid = OLD.sop_instance_uid
       AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.sop_instance_uid = OLD.sop_instance_uid);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER radiology_annotation_orphans AFTER DELETE ON instance
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION radiology_annotation_orphans();

CREATE TABLE radiology_report_template (
    id                      uuid PRIMARY KEY,
    name                    text NOT NULL,
    modality                text,
    body_part               text,
    content                 text NOT NULL,
    is_active               boolean NOT NULL DEFAULT true,
    deleted_at              timestamptz,
    created_by              text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX radiology_report_template_listing ON radiology_report_template (modality, body_part)
    WHERE deleted_at IS NULL;

CREATE TABLE radiology_report (
    id                      uuid PRIMARY KEY,
    study_id                uuid NOT NULL REFERENCES radiology_study (id) ON DELETE CASCADE,
    -- The final report an addendum corrects or completes.
    parent_report_id        uuid REFERENCES radiology_report (id) ON DELETE CASCADE,
    report_type             text NOT NULL CHECK (report_type IN ('preliminary', 'final', 'addendum')),
    status                  text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'preliminary', 'final')),
    findings                text NOT NULL DEFAULT '',
    impression              text NOT NULL DEFAULT '',
    recommendations         text NOT NULL DEFAULT '',
    template_id             uuid REFERENCES radiology_report_template (id),
    author                  text NOT NULL,
    verified_by             text,
    verified_at             timestamptz,
    -- Optimistic concurrency: an update names the version it read, and fails with 409 if another came first.
    version                 integer NOT NULL DEFAULT 1,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK ((report_type = 'addendum') = (parent_report_id IS NOT NULL))
);
CREATE INDEX radiology_report_study ON radiology_report (study_id, created_at);
CREATE INDEX radiology_report_parent ON radiology_report (parent_report_id);

-- Every state of every report, so that nothing a radiologist wrote is lost.
CREATE TABLE radiology_report_version (
    report_id               uuid NOT NULL REFERENCES radiology_report (id) ON DELETE CASCADE,
    version                 integer NOT NULL,
    action                  text NOT NULL,
    changed_by              text NOT NULL,
    changed_at              timestamptz NOT NULL DEFAULT now(),
    status                  text NOT NULL,
    findings                text NOT NULL,
    impression              text NOT NULL,
    recommendations         text NOT NULL,
    PRIMARY KEY (report_id, version)
);

INSERT INTO schema_version (version) VALUES (2);

-- migrate to version 3
-- Where each frame's bytes are in the stored file, recorded at store time (dicomweb/frame_index.py):
-- [[[offset, length], ...fragments], ...frames]. NULL when the frames are not plain byte ranges (deflated, big
-- endian, video, ...) or the instance was stored before version 3; those frames are found by reading the file.
ALTER TABLE instance ADD COLUMN frame_index jsonb;

INSERT INTO schema_version (version) VALUES (3);

-- migrate to version 4
-- The DICOM nodes the archive knows (PS3.7 application entities): who may associate and do what over DIMSE, and
-- where C-MOVE and "send to node" deliver. Managed by /api/dicom-nodes and `dicomweb nodes` (dicomweb/dimse/nodes.py).
CREATE TABLE dicom_node (
    ae_title    text PRIMARY KEY,  -- as called, without padding spaces (PS3.5 AE: 1 to 16 characters)
    host        text NOT NULL,
    port        integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    permissions text[] NOT NULL DEFAULT '{}',  -- of store, find, get, move
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO schema_version (version) VALUES (4);

-- migrate to version 5
-- What a Modality Worklist item needs of an order (PS3.4 Table K.6-1), beside scheduled_at (the scheduled procedure
-- step's start), referring_physician and study_description: the patient's birth date and sex, the station it is
-- scheduled on, the requested procedure and the scheduled procedure step. IDs the archive generates when the order
-- has none (reporting/studies.py); orders made before version 5 get their accession number as both.
ALTER TABLE radiology_study
    ADD COLUMN patient_birth_date                   date,
    ADD COLUMN patient_sex                          text CHECK (patient_sex IN ('M', 'F', 'O')),
    ADD COLUMN scheduled_station_ae_title           text,
    ADD COLUMN scheduled_station_name               text,
    ADD COLUMN scheduled_performing_physician       text,
    ADD COLUMN requested_procedure_id               text,
    ADD COLUMN requested_procedure_description      text,
    ADD COLUMN requested_procedure_code_value       text,
    ADD COLUMN requested_procedure_coding_scheme    text,
    ADD COLUMN requested_procedure_code_meaning     text,
    ADD COLUMN scheduled_procedure_step_id          text,
    ADD COLUMN scheduled_procedure_step_description text,
    ADD COLUMN priority                             text
                                                    CHECK (priority IN ('STAT', 'HIGH', 'ROUTINE', 'MEDIUM', 'LOW'));
-- The person names folded for the worklist's matching (case- and accent-insensitive, as the archive's patient table
-- keeps them: dicomweb.attributes.normalize_name); orders before version 5 get lower() (their accents stay).
ALTER TABLE radiology_study
    ADD COLUMN patient_name_folded                   text,
    ADD COLUMN referring_physician_folded            text,
    ADD COLUMN scheduled_performing_physician_folded text;
UPDATE radiology_study SET requested_procedure_id = accession_number, scheduled_procedure_step_id = accession_number,
                           patient_name_folded = lower(patient_name),
                           referring_physician_folded = lower(referring_physician);
ALTER TABLE radiology_study
    ALTER COLUMN requested_procedure_id SET NOT NULL,
    ALTER COLUMN scheduled_procedure_step_id SET NOT NULL;
CREATE INDEX radiology_study_station ON radiology_study (scheduled_station_ae_title, scheduled_at);
-- A node whose worklist query names no station (empty or "*") gets its own station's items only: the calling AE title
-- stands for the station (dimse/worklist.py).
ALTER TABLE dicom_node ADD COLUMN worklist_own_station boolean NOT NULL DEFAULT false;

-- Modality Performed Procedure Steps (PS3.4 Annex F): what a modality reports it performs (N-CREATE, IN PROGRESS)
-- and how it ends (N-SET: COMPLETED or DISCONTINUED), linked to the order it performs (NULL: unscheduled, kept as
-- such), with the series it made as it listed them (dicomweb/dimse/mpps.py).
CREATE TABLE performed_procedure_step (
    sop_instance_uid        text PRIMARY KEY,
    study_id                uuid REFERENCES radiology_study (id) ON DELETE SET NULL,
    status                  text NOT NULL CHECK (status IN ('IN PROGRESS', 'COMPLETED', 'DISCONTINUED')),
    calling_ae_title        text NOT NULL,
    station_ae_title        text,
    study_instance_uid      text,
    accession_number        text,
    patient_id              text,
    patient_name            text,
    procedure_step_id       text,
    description             text,
    start_date              date,
    start_time              time,
    end_date                date,
    end_time                time,
    discontinuation_reason  text,
    performed_series        jsonb NOT NULL DEFAULT '[]',  -- [{"seriesInstanceUID", "seriesDescription", "images"}]
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX performed_procedure_step_study ON performed_procedure_step (study_id);

INSERT INTO schema_version (version) VALUES (5);

-- migrate to version 6
-- Annotations as DICOM Structured Reports carry them (TID 1500 measurement groups, PS3.16): the measured value and its
-- UCUM unit (a length in mm), the SR an annotation was imported from (NULL: made through the API) and the group's
-- Tracking Unique Identifier (112039/112040). An annotation made through the API has none until it is exported; it
-- is then exported as 2.25.<its id as an integer> (PS3.5 §B.2), so the archive knows its own exports when they come back.
ALTER TABLE radiology_annotation
    ADD COLUMN value                    double precision,
    ADD COLUMN unit                     text,
    ADD COLUMN source_sop_instance_uid  text,
    ADD COLUMN tracking_uid             text UNIQUE;
CREATE INDEX radiology_annotation_source ON radiology_annotation (source_sop_instance_uid)
    WHERE source_sop_instance_uid IS NOT NULL;

INSERT INTO schema_version (version) VALUES (6);

-- migrate to version 7
-- The measurement groups of a stored TID 1500 Structured Report that did not become annotations (reporting/
-- sr_import.py): the shape is not one the annotations draw, the image it references is not in the archive, or the SR
-- cannot be read (tracking_uid NULL). Kept so that the study's JSON lists them: nothing is dropped silently. They go
-- with their SR when a later SR names it as predecessor.
CREATE TABLE radiology_sr_unimported (
    source_sop_instance_uid text NOT NULL,
    study_instance_uid      text NOT NULL,
    tracking_uid            text,
    reason                  text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX radiology_sr_unimported_study ON radiology_sr_unimported (study_instance_uid);
CREATE INDEX radiology_sr_unimported_source ON radiology_sr_unimported (source_sop_instance_uid);

INSERT INTO schema_version (version) VALUES (7);

-- migrate to version 8
-- The Structured Reports the archive writes itself (reporting/sr.py), stored as any instance: a study's newest export
-- of its annotations, which the next export names as its predecessor (PS3.3 C.17.2.3), and a verified report's SR,
-- or why none could be written (the study had no instance to take the patient and study attributes from).
CREATE TABLE radiology_annotation_export (
    study_id                uuid PRIMARY KEY REFERENCES radiology_study (id) ON DELETE CASCADE,
    sop_instance_uid        text NOT NULL,
    series_instance_uid     text NOT NULL,
    exported_by             text NOT NULL,
    exported_at             timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE radiology_report
    ADD COLUMN sr_sop_instance_uid      text,
    ADD COLUMN sr_series_instance_uid   text,
    ADD COLUMN sr_error                 text;

INSERT INTO schema_version (version) VALUES (8);

-- migrate to version 9
-- A measurement group on an image the archive did not hold when its SR was stored (a C-MOVE or a migration may send
-- the SR series first) waits for it, with the annotation it draws (JSON: type, coordinates, frameNumber, label,
-- value, unit) and who stored the SR; reporting/sr_waiting.py imports it once the image is stored, whichever
-- transport and replica stores it. The other groups not imported have no image_sop_instance_uid.
ALTER TABLE radiology_sr_unimported
    ADD COLUMN pk                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ADD COLUMN image_sop_instance_uid   text,
    ADD COLUMN annotation               jsonb,
    ADD COLUMN author                   text;
CREATE INDEX radiology_sr_unimported_image ON radiology_sr_unimported (image_sop_instance_uid)
    WHERE image_sop_instance_uid IS NOT NULL;

INSERT INTO schema_version (version) VALUES (9);

-- migrate to version 10
-- The storage commitment requests (PS3.4 Annex J) the archive accepted: written before the N-ACTION is answered
-- success, so that their N-EVENT-REPORT is sent whichever server process lives to send it
-- (dicomweb/dimse/commitment_reports.py). The process sending one holds it (claimed_by, until lease_until; another
-- takes it over only once the lease has ended); a report that could not be sent is tried again at next_attempt_at
-- until DICOMWEB_COMMIT_RETRY_HOURS after received_at, then abandoned. Reported and abandoned requests are kept 30
-- days, for the record.
CREATE TABLE storage_commitment (
    pk                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_uid         text NOT NULL,
    calling_ae_title        text NOT NULL,
    -- The Referenced SOP Sequence: [{"ReferencedSOPClassUID": ..., "ReferencedSOPInstanceUID": ...}, ...]
    referenced_sop_sequence jsonb NOT NULL,
    received_at             timestamptz NOT NULL DEFAULT now(),
    state                   text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'reported', 'abandoned')),
    attempts                integer NOT NULL DEFAULT 0,  -- begun, the first by the process that accepted it
    next_attempt_at         timestamptz NOT NULL DEFAULT now(),
    claimed_by              text,  -- the process sending it: host:pid:listener
    lease_until             timestamptz,
    last_error              text,  -- why the last attempt sent nothing
    event_type_id           integer CHECK (event_type_id IN (1, 2)),  -- of the report sent (J.3.3)
    failed_instances        integer,  -- items of its Failed SOP Sequence
    reported_at             timestamptz
);
CREATE INDEX storage_commitment_due ON storage_commitment (next_attempt_at) WHERE state = 'pending';
CREATE INDEX storage_commitment_received ON storage_commitment (received_at DESC);

INSERT INTO schema_version (version) VALUES (10);
