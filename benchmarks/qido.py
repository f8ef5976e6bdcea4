"""QIDO-RS latency benchmark on a large archive: load it once (``--load``), then time OHIF's queries (``--measure``).

``--load N`` STOWs N small synthetic instances (64x64, 16-bit, ~9.5 KB) to ``BASE_URL/studies`` in batches of 50
with ``--clients`` concurrent keep-alive clients. The archive is laid out like a clinical one: 20,000 x ``--scale``
patients with 5 studies each (100,000 x ``--scale`` studies), 2 series per study and the instances spread evenly
over the studies (5 per series for ``--load 1000000 --scale 1``; ``--scale`` defaults to N / 1,000,000, so
``--load 100000`` gives 2,000 patients and 10,000 studies). Names come from a list of real family and given names
with a realistic skew, accented ones (Müller, Dvořák, Øster, García) and names in other scripts (ISO_IR 192, with
ideographic and phonetic groups); PatientID is ``PAT{n:06d}``, AccessionNumber unique per study, StudyDate spread
over 2000-2026, modalities CT/MR/CR/US/DX, StudyDescription and SeriesDescription from short lists.

Instances are not built with pydicom one by one: one template file per modality is encoded once, and each
instance is that template with its UIDs and attributes written over fixed-width values in the bytes (~15 us per
instance, so the client leaves the CPU to the server). Everything is derived from ``--seed``: a re-run stores the
same UIDs and the same bytes, which the server accepts as already stored. A re-run first finds, with a binary
search of QIDO-RS probes, how far an earlier run got, checks the ``--resume-margin`` batches before that point one
by one (the requests an interrupted run had in flight) and sends only what is missing (``--from-start`` sends
everything again). The first N instances of a plan do not depend on how many more follow, as long as the
instances per study stay the same: ``--load 1000000`` after ``--load 100000`` (scale 1 after 0.1, 10 instances per
study both) adds the other 900,000.

``--measure`` runs every query ``--repeat`` times (after a warm-up), one request at a time on one keep-alive
connection, with parameters drawn from the stored patients and studies, and prints p50/p95/max latency in ms and
the number of results. With ``--database-url`` it also prints the database size and the row counts.

Examples::

    python benchmarks/qido.py http://127.0.0.1:8088/dicomweb --load 100000 --measure \\
        --database-url 'postgresql://postgres:@/postgres?host=/tmp/qidobench/pg'
    python benchmarks/qido.py http://127.0.0.1:8088/dicomweb --measure --scale 0.1 --repeat 100
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import calendar
import io
import itertools
import json
import math
import random
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    UltrasoundImageStorage,
)

FULL_INSTANCES = 1_000_000  # --scale 1
FULL_PATIENTS = 20_000
FULL_STUDIES = 100_000
SERIES_PER_STUDY = 2
BATCH = 50
SIZE = 64  # rows and columns of every image
UID_ROOT = "1.2.826.0.1.3680043.8.498.7717"  # pydicom's root (for examples and tests) + this benchmark's branch
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2026, 11, 30)

# ------------------------------------------------------------------------------------------------------------- names

# (family name, weight): common names recur (a family-name search returns tens to thousands of studies), rare ones
# do not. Every name here encodes in ISO_IR 100 (Latin-1) except those flagged by needs_utf8().
FAMILY_NAMES: tuple[tuple[str, int], ...] = (
    ("Müller", 40), ("Schmidt", 35), ("Schneider", 25), ("Fischer", 22), ("Weber", 20), ("Meyer", 18),
    ("Wagner", 16), ("Becker", 14), ("Schulz", 13), ("Hoffmann", 12), ("Schäfer", 10), ("Koch", 10),
    ("Bauer", 9), ("Richter", 9), ("Klein", 8), ("Wolf", 8), ("Schröder", 7), ("Neumann", 7), ("Schwarz", 6),
    ("Zimmermann", 6), ("Braun", 6), ("Krüger", 5), ("Hofmann", 5), ("Hartmann", 5), ("Lange", 5),
    ("García", 30), ("Fernández", 18), ("González", 18), ("Rodríguez", 16), ("López", 14), ("Martínez", 14),
    ("Sánchez", 12), ("Pérez", 12), ("Gómez", 8), ("Martín", 8), ("Jiménez", 6), ("Muñoz", 6),
    ("Martin", 20), ("Bernard", 14), ("Dubois", 12), ("Thomas", 12), ("Robert", 10), ("Richard", 10),
    ("Petit", 8), ("Durand", 8), ("Leroy", 6), ("Lefèvre", 6), ("Moreau", 6), ("Girard", 5), ("Rousseau", 5),
    ("Rossi", 16), ("Russo", 12), ("Ferrari", 10), ("Esposito", 10), ("Bianchi", 8), ("Romano", 8),
    ("Smith", 30), ("Johnson", 20), ("Williams", 18), ("Brown", 16), ("Jones", 16), ("Miller", 14),
    ("Davis", 12), ("Wilson", 10), ("Taylor", 10), ("O'Brien", 6), ("MacDonald", 5),
    ("Nowak", 12), ("Kowalski", 10), ("Wiśniewski", 8), ("Wójcik", 6), ("Łukasiewicz", 3), ("Dvořák", 8),
    ("Novák", 10), ("Svoboda", 8), ("Černý", 5), ("Procházka", 5), ("Kovács", 8), ("Nagy", 8), ("Tóth", 6),
    ("Jensen", 10), ("Nielsen", 10), ("Hansen", 10), ("Øster", 5), ("Østergaard", 4), ("Jørgensen", 6),
    ("Sørensen", 6), ("Ødegård", 3), ("Andersson", 10), ("Johansson", 10), ("Björk", 4), ("Söderberg", 4),
    ("Åberg", 3), ("de Jong", 8), ("Jansen", 8), ("van Dijk", 6), ("Silva", 12), ("Santos", 10),
    ("Gonçalves", 6), ("Yılmaz", 6), ("Öztürk", 4), ("Papadopoulos", 5), ("Ivanov", 5), ("Kim", 6),
)  # fmt: skip
GIVEN_NAMES_F = (
    "Anna", "Maria", "Emma", "Sophie", "Lena", "Julia", "Laura", "Sarah", "Léa", "Chloé", "Zoë", "Inès", "Lucía",
    "Sofía", "Giulia", "Olivia", "Emily", "Zuzana", "Jana", "Agnieszka", "Małgorzata", "Ingrid", "Åsa", "Björg",
    "Renée", "Françoise", "Ana", "Ayşe", "Eléni",
)  # fmt: skip
GIVEN_NAMES_M = (
    "Hans", "Peter", "Thomas", "Michael", "Jürgen", "Lukas", "Jonas", "Paul", "Léo", "Hugo", "Noël", "José",
    "Javier", "Ángel", "Marco", "Luca", "James", "John", "David", "Jan", "Jiří", "Tomáš", "Piotr", "Paweł",
    "Søren", "Lars", "Björn", "Göran", "João", "Mehmet", "Andrés", "François",
)  # fmt: skip
# Names that need ISO_IR 192: other scripts, with the ideographic and phonetic component groups (PS3.5 §6.2.1).
OTHER_SCRIPT_NAMES = (
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "Tanaka^Hanako=田中^花子=たなか^はなこ",
    "Suzuki^Ichiro=鈴木^一郎=すずき^いちろう",
    "Wang^Xiaodong=王^小东",
    "Li^Na=李^娜",
    "Zhang^Wei=张^伟",
    "Kim^Minjun=김^민준",
    "Park^Jiyeon=박^지연",
    "Παπαδόπουλος^Γιώργος",
    "Ιωάννου^Μαρία",
    "Иванов^Иван",
    "Смирнова^Ольга",
    "Şahin^Elif",
    "Nguyễn^Văn An",
)
OTHER_SCRIPT_SHARE = 0.04  # patients named from OTHER_SCRIPT_NAMES
UTF8_SHARE = 0.3  # patients whose Latin-1 names are sent as ISO_IR 192 anyway (newer modalities)
MIDDLE_INITIALS = "ABCDEFGHJKLMNPRSTW"

REFERRING = (
    "Welby^Marcus", "House^Gregory", "Quinn^Michaela", "Dorian^John", "Grey^Meredith", "Kildare^James",
    "Carter^John", "Lewis^Susan", "Ross^Doug", "Hartmann^Eva",
)  # fmt: skip

# ------------------------------------------------------------------------------------------------------- modalities


@dataclass(frozen=True)
class Modality:
    """What a study of one modality looks like: SOP class, weight, study and series descriptions, body parts."""

    code: str
    sop_class: str
    weight: int
    studies: tuple[tuple[str, str], ...]  # (StudyDescription, BodyPartExamined)
    series: tuple[str, ...]  # SeriesDescription of series 1, 2, ...


MODALITIES = (
    Modality(
        "CT",
        CTImageStorage,
        30,
        (
            ("CT THORAX W/O CONTRAST", "CHEST"),
            ("CT ABDOMEN PELVIS W CONTRAST", "ABDOMEN"),
            ("CT HEAD W/O CONTRAST", "HEAD"),
            ("CT ANGIO PULMONARY", "CHEST"),
        ),
        ("AXIAL 5.0 mm", "CORONAL 3.0 mm"),
    ),
    Modality(
        "MR",
        MRImageStorage,
        20,
        (("MR BRAIN W/WO CONTRAST", "BRAIN"), ("MR KNEE LEFT", "KNEE"), ("MR LUMBAR SPINE", "LSPINE")),
        ("T1 SAG", "T2 AX FS"),
    ),
    Modality(
        "CR",
        ComputedRadiographyImageStorage,
        20,
        (("XR CHEST 2 VIEWS", "CHEST"), ("XR PELVIS AP", "PELVIS"), ("XR HAND LEFT 3 VIEWS", "HAND")),
        ("PA", "LAT"),
    ),
    Modality(
        "US",
        UltrasoundImageStorage,
        15,
        (("US ABDOMEN COMPLETE", "ABDOMEN"), ("US THYROID", "NECK"), ("US OB 2ND TRIMESTER", "PELVIS")),
        ("B-MODE", "DOPPLER"),
    ),
    Modality(
        "DX",
        DigitalXRayImageStorageForPresentation,
        15,
        (("DX KNEE RIGHT 2 VIEWS", "KNEE"), ("DX SHOULDER LEFT", "SHOULDER"), ("DX FOOT RIGHT", "FOOT")),
        ("AP", "LAT"),
    ),
)
MODALITY_WEIGHTS = tuple(itertools.accumulate(m.weight for m in MODALITIES))

# --------------------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Patient:
    number: int
    name: str  # PN as stored, "Family^Given" (maybe "=Ideographic=Phonetic")
    family: str  # the family name a user would type
    patient_id: str
    birth_date: date
    sex: str
    charset: str  # "ISO_IR 100" or "ISO_IR 192"


@dataclass(frozen=True)
class Study:
    number: int
    patient: Patient
    uid: str
    frame_uid: str
    accession: str
    study_id: str
    day: date
    time: str
    modality: Modality
    description: str
    body_part: str
    referring: str
    first: int  # global index of its first instance
    count: int  # instances


def weighted(rng: random.Random, cumulative: Sequence[int]) -> int:
    """Index drawn from cumulative weights."""
    return bisect.bisect_right(cumulative, rng.randrange(cumulative[-1]))


FAMILY_WEIGHTS = tuple(itertools.accumulate(w for _, w in FAMILY_NAMES))


def needs_utf8(text: str) -> bool:
    """Whether ``text`` is outside ISO_IR 100 (Latin-1)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return True
    return False


class Plan:
    """The synthetic archive, every attribute a pure function of (seed, index): patients, studies, series, instances.

    ``instances`` are spread evenly over ``studies`` (study j holds [j*N//S, (j+1)*N//S)), studies over patients
    (patient j*P//S), each study's instances over SERIES_PER_STUDY series (fewer if it has fewer instances)."""

    def __init__(self, seed: int, instances: int, scale: float) -> None:
        self.seed = seed
        self.instances = instances
        self.patients = max(1, round(FULL_PATIENTS * scale))
        self.studies = max(1, min(instances, round(FULL_STUDIES * scale)))
        self.patients = min(self.patients, self.studies)
        self._uid_prefix = f"{UID_ROOT}.{seed}."
        self._patient_cache: dict[int, Patient] = {}

    # UIDs: fixed width (10 digits after the kind), so every instance encodes to the same length.
    def uid(self, kind: int, number: int) -> str:
        """Kind 1 study, 2 series, 3 SOP instance, 4 frame of reference."""
        return f"{self._uid_prefix}{kind}.{1_000_000_000 + number}"

    def study_of(self, instance: int) -> int:
        """The study holding global instance ``instance``."""
        j = instance * self.studies // self.instances
        while self.first_of(j + 1) <= instance:
            j += 1
        while self.first_of(j) > instance:
            j -= 1
        return j

    def first_of(self, study: int) -> int:
        return study * self.instances // self.studies

    def patient(self, number: int) -> Patient:
        cached = self._patient_cache.get(number)
        if cached is not None:
            return cached
        rng = random.Random(f"{self.seed}/patient/{number}")
        sex = "F" if rng.random() < 0.52 else "M"
        if rng.random() < OTHER_SCRIPT_SHARE:
            name = OTHER_SCRIPT_NAMES[rng.randrange(len(OTHER_SCRIPT_NAMES))]
            family = name.split("^", 1)[0]
        else:
            family = FAMILY_NAMES[weighted(rng, FAMILY_WEIGHTS)][0]
            given = rng.choice(GIVEN_NAMES_F if sex == "F" else GIVEN_NAMES_M)
            name = f"{family}^{given}"
            if rng.random() < 0.15:
                name += f"^{rng.choice(MIDDLE_INITIALS)}"
        charset = "ISO_IR 192" if needs_utf8(name) or rng.random() < UTF8_SHARE else "ISO_IR 100"
        birth = date(1930, 1, 1) + timedelta(days=rng.randrange(80 * 365))
        patient = Patient(number, name, family, f"PAT{number:06d}", birth, sex, charset)
        if len(self._patient_cache) > 100_000:
            self._patient_cache.clear()
        self._patient_cache[number] = patient
        return patient

    def study(self, number: int) -> Study:
        patient = self.patient(number * self.patients // self.studies)
        rng = random.Random(f"{self.seed}/study/{number}")
        start = max(FIRST_DAY, patient.birth_date)
        day = start + timedelta(days=rng.randrange((LAST_DAY - start).days + 1))
        modality = MODALITIES[weighted(rng, MODALITY_WEIGHTS)]
        description, body_part = rng.choice(modality.studies)
        first = self.first_of(number)
        return Study(
            number=number,
            patient=patient,
            uid=self.uid(1, number),
            frame_uid=self.uid(4, number),
            accession=f"A{self.seed % 100:02d}{number + 1:09d}",
            study_id=str(number % 100_000 + 1),
            day=day,
            time=f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
            modality=modality,
            description=description,
            body_part=body_part,
            referring=rng.choice(REFERRING),
            first=first,
            count=self.first_of(number + 1) - first,
        )

    def series_count(self, study: Study) -> int:
        return min(SERIES_PER_STUDY, study.count)

    def series_of(self, study: Study, local: int) -> tuple[int, int]:
        """(series index within the study, InstanceNumber) of the study's ``local``-th instance."""
        n = self.series_count(study)
        s = local * n // study.count
        return s, local - (s * study.count + n - 1) // n + 1

    def series_uid(self, study: Study, series: int) -> str:
        return self.uid(2, study.number * SERIES_PER_STUDY + series)

    def complete_studies(self, loaded: int) -> int:
        """How many studies have all their instances among the first ``loaded``."""
        return bisect.bisect_right(range(self.studies), loaded, key=lambda j: self.first_of(j + 1))


# ---------------------------------------------------------------------------------------------------------- templates

# Patched elements: keyword -> (VR, width in bytes). Values are padded to the width (UI with NUL, others with
# spaces), so the encoded file never changes length.
FIELDS: dict[str, tuple[str, int]] = {
    "MediaStorageSOPInstanceUID": ("UI", 0),  # 0: the UID width of the plan
    "SpecificCharacterSet": ("CS", 10),
    "StudyDate": ("DA", 8),
    "SeriesDate": ("DA", 8),
    "AcquisitionDate": ("DA", 8),
    "ContentDate": ("DA", 8),
    "StudyTime": ("TM", 6),
    "SeriesTime": ("TM", 6),
    "AcquisitionTime": ("TM", 6),
    "ContentTime": ("TM", 6),
    "SOPInstanceUID": ("UI", 0),
    "AccessionNumber": ("SH", 12),
    "ReferringPhysicianName": ("PN", 32),
    "StudyDescription": ("LO", 32),
    "SeriesDescription": ("LO", 16),
    "PatientName": ("PN", 80),
    "PatientID": ("LO", 10),
    "PatientBirthDate": ("DA", 8),
    "PatientSex": ("CS", 2),
    "BodyPartExamined": ("CS", 10),
    "StudyInstanceUID": ("UI", 0),
    "SeriesInstanceUID": ("UI", 0),
    "StudyID": ("SH", 6),
    "SeriesNumber": ("IS", 2),
    "InstanceNumber": ("IS", 4),
    "FrameOfReferenceUID": ("UI", 0),
}
TAGS = {
    "MediaStorageSOPInstanceUID": 0x00020003,
    "SpecificCharacterSet": 0x00080005,
    "StudyDate": 0x00080020,
    "SeriesDate": 0x00080021,
    "AcquisitionDate": 0x00080022,
    "ContentDate": 0x00080023,
    "StudyTime": 0x00080030,
    "SeriesTime": 0x00080031,
    "AcquisitionTime": 0x00080032,
    "ContentTime": 0x00080033,
    "SOPInstanceUID": 0x00080018,
    "AccessionNumber": 0x00080050,
    "ReferringPhysicianName": 0x00080090,
    "StudyDescription": 0x00081030,
    "SeriesDescription": 0x0008103E,
    "PatientName": 0x00100010,
    "PatientID": 0x00100020,
    "PatientBirthDate": 0x00100030,
    "PatientSex": 0x00100040,
    "BodyPartExamined": 0x00180015,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "StudyID": 0x00200010,
    "SeriesNumber": 0x00200011,
    "InstanceNumber": 0x00200013,
    "FrameOfReferenceUID": 0x00200052,
}


class Template:
    """One encoded file of a modality, cut into the constant byte runs between the patched values."""

    def __init__(self, modality: Modality, uid_width: int, rng: np.random.Generator) -> None:
        self.widths = {k: (vr, w or uid_width + uid_width % 2) for k, (vr, w) in FIELDS.items()}
        ds = self._dataset(modality, uid_width, rng)
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        data = buf.getvalue()
        header_end = data.rfind(b"\xe0\x7f\x10\x00")  # Pixel Data: search only before it
        located: list[tuple[int, str]] = []
        for keyword, (vr, width) in self.widths.items():
            tag = TAGS[keyword]
            needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode() + struct.pack("<H", width)
            at = data.find(needle, 0, header_end)
            if at < 0 or data.find(needle, at + 1, header_end) >= 0:
                raise RuntimeError(f"template: {keyword} ({vr}, {width} bytes) not found exactly once")
            located.append((at + len(needle), keyword))
        located.sort()
        self.order = [keyword for _, keyword in located]
        self.chunks: list[bytes] = []
        previous = 0
        for offset, keyword in located:
            self.chunks.append(data[previous:offset])
            previous = offset + self.widths[keyword][1]
        self.chunks.append(data[previous:])
        self.size = len(data)

    def _dataset(self, modality: Modality, uid_width: int, rng: np.random.Generator) -> Dataset:
        def filler(keyword: str) -> str:
            vr, width = self.widths[keyword]
            if vr == "UI":
                return "1." + "9" * (uid_width - 2)
            if vr == "DA":
                return "20000101"
            if vr == "TM":
                return "120000"
            if vr == "IS":
                return "9" * width
            if vr == "PN":  # component groups of at most 64 characters
                return "=".join(["X" * (width // 2), "X" * (width - width // 2 - 1)])
            return "X" * width

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(modality.sop_class)
        meta.MediaStorageSOPInstanceUID = UID(filler("MediaStorageSOPInstanceUID"))
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        for keyword in FIELDS:
            if keyword != "MediaStorageSOPInstanceUID":
                setattr(ds, keyword, filler(keyword))
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality.code in ("CT", "MR") else ["ORIGINAL", "PRIMARY"]
        ds.SOPClassUID = UID(modality.sop_class)
        ds.Modality = modality.code
        ds.Manufacturer = "BENCH MEDICAL"
        ds.InstitutionName = "QIDO BENCHMARK HOSPITAL"
        ds.ManufacturerModelName = f"SYNTH-{modality.code}"
        ds.AcquisitionNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = SIZE
        ds.PixelSpacing = ["0.7812", "0.7812"]
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        if modality.code == "CT":
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        y, x = np.ogrid[:SIZE, :SIZE]
        c = (SIZE - 1) / 2
        inside = ((x - c) / (0.45 * SIZE)) ** 2 + ((y - c) / (0.35 * SIZE)) ** 2 <= 1.0
        pixels = np.where(inside, 1064, 24).astype(np.uint16) + rng.integers(0, 96, size=(SIZE, SIZE), dtype=np.uint16)
        ds.PixelData = pixels.astype("<u2").tobytes()
        return ds

    def render(self, values: dict[str, str]) -> bytes:
        """The template with ``values`` (keyword -> text) written in, encoded as the charset asks."""
        codec = "utf-8" if values["SpecificCharacterSet"] == "ISO_IR 192" else "latin-1"
        parts = [self.chunks[0]]
        for keyword, chunk in zip(self.order, self.chunks[1:], strict=True):
            vr, width = self.widths[keyword]
            raw = values[keyword].encode(codec if vr in ("PN", "LO", "SH") else "ascii")
            if len(raw) > width:
                raise ValueError(f"{keyword} {values[keyword]!r} is longer than {width} bytes")
            parts.append(raw + (b"\0" if vr == "UI" else b" ") * (width - len(raw)))
            parts.append(chunk)
        return b"".join(parts)


class Generator:
    """Encodes the instances of a plan from one template per modality."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        uid_width = len(plan.uid(3, 0))
        rng = np.random.default_rng(plan.seed)
        self.templates = {m.code: Template(m, uid_width, rng) for m in MODALITIES}

    def instance(self, study: Study, index: int) -> bytes:
        """Encode global instance ``index`` of ``study``."""
        plan = self.plan
        series, number = plan.series_of(study, index - study.first)
        patient = study.patient
        sop = plan.uid(3, index)
        day = study.day.strftime("%Y%m%d")
        values = {
            "MediaStorageSOPInstanceUID": sop,
            "SOPInstanceUID": sop,
            "SpecificCharacterSet": patient.charset,
            "StudyDate": day,
            "SeriesDate": day,
            "AcquisitionDate": day,
            "ContentDate": day,
            "StudyTime": study.time,
            "SeriesTime": study.time,
            "AcquisitionTime": study.time,
            "ContentTime": study.time,
            "AccessionNumber": study.accession,
            "ReferringPhysicianName": study.referring,
            "StudyDescription": study.description,
            "SeriesDescription": study.modality.series[series % len(study.modality.series)],
            "PatientName": patient.name,
            "PatientID": patient.patient_id,
            "PatientBirthDate": patient.birth_date.strftime("%Y%m%d"),
            "PatientSex": patient.sex,
            "BodyPartExamined": study.body_part,
            "StudyInstanceUID": study.uid,
            "SeriesInstanceUID": plan.series_uid(study, series),
            "StudyID": study.study_id,
            "SeriesNumber": str(series + 1),
            "InstanceNumber": str(number),
            "FrameOfReferenceUID": study.frame_uid,
        }
        return self.templates[study.modality.code].render(values)

    def batch(self, start: int, stop: int) -> list[bytes]:
        """Encode global instances [start, stop)."""
        out: list[bytes] = []
        study = self.plan.study(self.plan.study_of(start))
        for index in range(start, stop):
            if index >= study.first + study.count:
                study = self.plan.study(study.number + 1)
            out.append(self.instance(study, index))
        return out

    def last_instance(self, stop: int) -> tuple[str, str, str]:
        """(study, series, SOP instance) UIDs of global instance ``stop - 1``."""
        plan = self.plan
        index = stop - 1
        study = plan.study(plan.study_of(index))
        series, _ = plan.series_of(study, index - study.first)
        return study.uid, plan.series_uid(study, series), plan.uid(3, index)


# ----------------------------------------------------------------------------------------------------------- loading

BOUNDARY = b"qido-bench-4f1c9a"
PART_HEAD = b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n\r\n"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY.decode()}'


def multipart_body(parts: Sequence[bytes]) -> bytes:
    chunks: list[bytes] = []
    for part in parts:
        chunks += (PART_HEAD, part, b"\r\n")
    chunks.append(b"--" + BOUNDARY + b"--\r\n")
    return b"".join(chunks)


def failed_in(response: httpx.Response, sent: int) -> tuple[int, str | None]:
    """Instances a STOW-RS response reports as failed; any status but 200 fails the whole request."""
    if response.status_code != 200:
        return sent, f"HTTP {response.status_code}: {response.text[:300]!r}"
    try:
        body = response.json()
    except ValueError:
        return 0, None
    failed = body.get("00081198", {}).get("Value", []) if isinstance(body, dict) else []
    return len(failed), (f"{len(failed)} instances in FailedSOPSequence" if failed else None)


@dataclass
class LoadResult:
    instances: int  # sent in this run
    skipped: int  # before the resume point
    failed: int
    seconds: float
    client_cpu: float
    server_cpu: float | None
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return (self.instances - self.failed) / self.seconds if self.seconds else 0.0


class Server:
    """Keep-alive HTTP clients for one DICOMweb base URL."""

    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        self.base = base_url.rstrip("/")
        self.headers = {"Accept": "application/dicom+json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = httpx.Timeout(timeout, connect=10.0)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=self.timeout)


def stored(client: httpx.Client, generator: Generator, batch: int) -> bool:
    """Whether the last instance of ``batch`` is stored (one scoped QIDO-RS instance query)."""
    plan = generator.plan
    stop = min(plan.instances, (batch + 1) * BATCH)
    study, series, sop = generator.last_instance(stop)
    response = client.get(f"/studies/{study}/series/{series}/instances", params={"SOPInstanceUID": sop})
    response.raise_for_status()
    return bool(response.json())


def loaded_batches(client: httpx.Client, generator: Generator) -> tuple[int, int]:
    """Binary search for the last stored batch: (b, probes) with batch b stored and b + 1 not (b = -1: none).

    The clients of a run take batches in order, so an interrupted run leaves batches 0..a-1 stored and holes only
    among the last ``clients`` batches it had in flight: b + 1 - (that many clients) <= a."""
    total = math.ceil(generator.plan.instances / BATCH)
    low, high, probes = -1, total, 0  # stored(low) (or low = -1), not stored(high) (or high = total)
    while high - low > 1:
        middle = (low + high) // 2
        probes += 1
        if stored(client, generator, middle):
            low = middle
        else:
            high = middle
    return low, probes


def cpu_of(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of some process trees (psutil), or None."""
    if not pids:
        return None
    import psutil

    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
            procs += procs[-1].children(recursive=True)
        except psutil.NoSuchProcess:
            return None
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def load(
    server: Server,
    generator: Generator,
    clients: int,
    todo: Sequence[int],
    progress_every: float,
    retries: int,
    server_pids: Sequence[int],
) -> LoadResult:
    """STOW the batches ``todo`` (indices, in order) with ``clients`` threads; prints progress."""
    plan = generator.plan
    sending = sum(min(plan.instances, (k + 1) * BATCH) - k * BATCH for k in todo)
    skipped = plan.instances - sending
    result = LoadResult(sending, skipped, 0, 0.0, 0.0, None)
    lock = threading.Lock()
    batches = iter(todo)
    done = [0]
    stop = threading.Event()

    def worker() -> None:
        with server.client() as client:
            while not stop.is_set():
                with lock:
                    k = next(batches, None)
                if k is None:
                    return
                first, last = k * BATCH, min(plan.instances, (k + 1) * BATCH)
                body = multipart_body(generator.batch(first, last))
                failed, error = last - first, None
                for attempt in range(retries + 1):
                    try:
                        response = client.post("/studies", content=body, headers={"Content-Type": CONTENT_TYPE})
                        failed, error = failed_in(response, last - first)
                        transient = response.status_code >= 500
                    except httpx.HTTPError as exc:
                        failed, error, transient = last - first, f"{type(exc).__name__}: {exc}", True
                    if not transient or attempt == retries:
                        break
                    time.sleep(min(30.0, 2.0**attempt))
                with lock:
                    done[0] += last - first
                    result.failed += failed
                    if error:
                        result.errors.append(f"batch {k}: {error}")

    cpu0, server0 = time.process_time(), cpu_of(server_pids)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, name=f"client-{n}", daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    last_t, last_done = t0, 0
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
            now = time.perf_counter()
            if now - last_t >= progress_every:
                with lock:
                    n, failed = done[0], result.failed
                window = (n - last_done) / (now - last_t)
                overall = n / (now - t0)
                left = result.instances - n
                eta = timedelta(seconds=round(left / overall)) if overall else "?"
                print(
                    f"  {skipped + n:>9,} / {plan.instances:,} instances ({(skipped + n) / plan.instances:6.1%}): "
                    f"{window:6.0f}/s now, {overall:6.0f}/s overall, {failed} failed, ETA {eta}",
                    flush=True,
                )
                last_t, last_done = now, n
    except KeyboardInterrupt:
        stop.set()
        print("  interrupted: finishing the requests in flight", flush=True)
        for thread in threads:
            thread.join()
        raise
    result.seconds = time.perf_counter() - t0
    result.client_cpu = time.process_time() - cpu0
    server1 = cpu_of(server_pids)
    result.server_cpu = server1 - server0 if server1 is not None and server0 is not None else None
    return result


# --------------------------------------------------------------------------------------------------------- measuring

OHIF_LIST = (("limit", "101"), ("offset", "0"), ("fuzzymatching", "false"), ("includefield", "00081030,00080060"))
Params = list[tuple[str, str]]


def ohif(*filters: tuple[str, str], **overrides: str) -> Params:
    """OHIF's study list query (limit=101, offset 0, includefield description and modality) plus ``filters``."""
    return [(k, overrides.get(k, v)) for k, v in OHIF_LIST] + list(filters)


@dataclass
class QueryStats:
    name: str
    example: str
    latencies: list[float] = field(default_factory=list)  # seconds
    results: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] * 1000


class Queries:
    """The query types, each a function of a random generator returning (path, params)."""

    def __init__(self, plan: Plan, loaded: int) -> None:
        self.plan = plan
        self.studies = plan.complete_studies(loaded)
        if self.studies == 0:
            raise SystemExit("no complete study is stored: load first (--load N)")
        self.patients = (self.studies - 1) * plan.patients // plan.studies + 1  # those with a stored study

    def some_study(self, rng: random.Random) -> Study:
        return self.plan.study(rng.randrange(self.studies))

    def some_family(self, rng: random.Random) -> str:
        """The family name of a stored patient, as a user types it (lower case, accents kept)."""
        return self.plan.patient(rng.randrange(self.patients)).family.lower()

    def table(self) -> list[tuple[str, Callable[[random.Random], tuple[str, Params]]]]:
        def fragment(rng: random.Random) -> tuple[str, Params]:
            family = self.some_family(rng)
            n = min(len(family), rng.choice((3, 4)))
            at = rng.randrange(len(family) - n + 1)
            return "/studies", ohif(("PatientName", f"*{family[at : at + n]}*"))

        def prefix(rng: random.Random) -> tuple[str, Params]:
            return "/studies", ohif(("PatientName", f"{self.some_family(rng)[:4]}*"))

        def fuzzy(rng: random.Random) -> tuple[str, Params]:
            family = self.some_family(rng)
            return "/studies", ohif(("PatientName", family[: max(3, len(family) - 1)]), fuzzymatching="true")

        def month(rng: random.Random) -> tuple[str, Params]:
            year, mon = rng.randrange(FIRST_DAY.year, LAST_DAY.year + 1), rng.randrange(1, 13)
            if (year, mon) > (LAST_DAY.year, LAST_DAY.month):
                year -= 1
            last = calendar.monthrange(year, mon)[1]
            return "/studies", ohif(("StudyDate", f"{year}{mon:02d}01-{year}{mon:02d}{last:02d}"))

        def patient_id(rng: random.Random) -> tuple[str, Params]:
            return "/studies", ohif(("00100020", self.plan.patient(rng.randrange(self.patients)).patient_id))

        # OHIF's study list (mapParams in its qido.js) wraps PatientID, AccessionNumber and StudyDescription in *...*
        # too when the data source has supportsWildcard (its default): exact values inside infix wildcards.
        def patient_id_wildcard(rng: random.Random) -> tuple[str, Params]:
            return "/studies", ohif(("00100020", f"*{self.plan.patient(rng.randrange(self.patients)).patient_id}*"))

        def accession_wildcard(rng: random.Random) -> tuple[str, Params]:
            return "/studies", ohif(("AccessionNumber", f"*{self.some_study(rng).accession}*"))

        def description_wildcard(rng: random.Random) -> tuple[str, Params]:
            words = self.some_study(rng).description.split()
            return "/studies", ohif(("StudyDescription", f"*{rng.choice(words[1:] or words)}*"))

        def series_of_study(rng: random.Random) -> tuple[str, Params]:
            return f"/studies/{self.some_study(rng).uid}/series", []

        def instances_of_study(rng: random.Random) -> tuple[str, Params]:
            return f"/studies/{self.some_study(rng).uid}/instances", []

        def instances_of_series(rng: random.Random) -> tuple[str, Params]:
            study = self.some_study(rng)
            series = rng.randrange(self.plan.series_count(study))
            return f"/studies/{study.uid}/series/{self.plan.series_uid(study, series)}/instances", []

        return [
            ("study list", lambda rng: ("/studies", ohif())),
            ("study list offset=1000", lambda rng: ("/studies", ohif(offset="1000"))),
            ("study list limit=50 offset=1000", lambda rng: ("/studies", ohif(limit="50", offset="1000"))),
            ("PatientName=*frag*", fragment),
            ("PatientName=prefix*", prefix),
            ("PatientName fuzzy", fuzzy),
            ("PatientID (00100020)", patient_id),
            ("StudyDate one month", month),
            ("ModalitiesInStudy=MR", lambda rng: ("/studies", ohif(("ModalitiesInStudy", "MR")))),
            ("AccessionNumber", lambda rng: ("/studies", ohif(("AccessionNumber", self.some_study(rng).accession)))),
            ("PatientID=*ID* (OHIF)", patient_id_wildcard),
            ("AccessionNumber=*A* (OHIF)", accession_wildcard),
            ("StudyDescription=*word* (OHIF)", description_wildcard),
            ("series of a study", series_of_study),
            ("instances of a study", instances_of_study),
            ("instances of a series", instances_of_series),
        ]


def describe(path: str, params: Params) -> str:
    shown = "&".join(f"{k}={v}" for k, v in params if (k, v) not in OHIF_LIST)
    shown = shown.replace("fuzzymatching=true", "fuzzy=true")
    return (path if len(path) < 40 else path[:20] + "..." + path[-12:]) + (f"?{shown}" if shown else "")


def measure(server: Server, queries: Queries, repeat: int, warmup: int, seed: int) -> list[QueryStats]:
    """Each query type ``warmup`` times unmeasured, then ``repeat`` times, sequentially on one connection."""
    out: list[QueryStats] = []
    with server.client() as client:
        for name, make in queries.table():
            rng = random.Random(f"{seed}/measure/{name}")
            stats = QueryStats(name, describe(*make(random.Random(0))))
            for i in range(warmup + repeat):
                path, params = make(rng)
                t0 = time.perf_counter()
                try:
                    response = client.get(path, params=tuple(params))
                    body = response.content
                    elapsed = time.perf_counter() - t0
                except httpx.HTTPError as exc:
                    stats.errors.append(f"{describe(path, params)}: {type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    stats.errors.append(f"{describe(path, params)}: HTTP {response.status_code}: {body[:200]!r}")
                    continue
                if i >= warmup:
                    stats.latencies.append(elapsed)
                    stats.results.append(len(json.loads(body)) if body else 0)
            print(
                f"  {name}: p50 {stats.percentile(50) if stats.latencies else 0:.1f} ms",
                f"({len(stats.errors)} errors: {stats.errors[0]})" if stats.errors else "",
                flush=True,
            )
            out.append(stats)
    return out


def print_latencies(rows: Sequence[QueryStats]) -> None:
    header = (
        f"{'query':<34} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'results (min/median/max)':>24}  example"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if not r.latencies:
            lines.append(f"{r.name:<34} {0:>4} {'-':>8} {'-':>8} {'-':>8} {'-':>24}  {r.example}")
            continue
        results = f"{min(r.results)}/{statistics.median(r.results):g}/{max(r.results)}"
        lines.append(
            f"{r.name:<34} {len(r.latencies):>4} {r.percentile(50):>8.1f} {r.percentile(95):>8.1f} "
            f"{max(r.latencies) * 1000:>8.1f} {results:>24}  {r.example}"
        )
    print("\n".join(lines))


# ---------------------------------------------------------------------------------------------------------- database


async def _database_stats(url: str) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        stats: dict[str, Any] = {"database_bytes": await conn.fetchval("SELECT pg_database_size(current_database())")}
        tables = await conn.fetch(
            "SELECT quote_ident(c.relname) AS name, pg_total_relation_size(c.oid) AS bytes, "
            "pg_indexes_size(c.oid) AS index_bytes FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace ORDER BY bytes DESC"
        )
        stats["tables"] = {
            t["name"]: {
                "rows": await conn.fetchval(f"SELECT count(*) FROM {t['name']}"),
                "bytes": t["bytes"],
                "index_bytes": t["index_bytes"],
            }
            for t in tables
        }
        return stats
    finally:
        await conn.close()


def database_stats(url: str) -> dict[str, Any]:
    """pg_database_size, and the rows and sizes (with indexes and TOAST) of every table of the schema."""
    return asyncio.run(_database_stats(url))


def print_database(stats: dict[str, Any]) -> None:
    print(f"database size: {stats['database_bytes'] / 2**20:,.0f} MiB (pg_database_size)")
    for name, table in stats["tables"].items():
        print(
            f"  {name:<20} {table['rows']:>10,} rows  {table['bytes'] / 2**20:>9,.1f} MiB "
            f"(indexes {table['index_bytes'] / 2**20:,.1f} MiB)"
        )


# --------------------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url", metavar="BASE_URL", help="DICOMweb root, e.g. http://127.0.0.1:8088/dicomweb")
    parser.add_argument("--load", type=int, metavar="N", help="store the first N instances of the plan (resumable)")
    parser.add_argument("--measure", action="store_true", help="time the QIDO-RS queries (after --load, if given)")
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="patients = 20,000 x S, studies = 100,000 x S (default: N / 1,000,000 with --load, else 1)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=None,
        help="plan size for --measure without --load (default 1,000,000 x --scale); the stored part is probed",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of every UID and attribute (default 1)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent STOW-RS clients (default 4)")
    parser.add_argument("--from-start", action="store_true", help="send every batch again, even the stored ones")
    parser.add_argument(
        "--resume-margin",
        type=int,
        default=64,
        help="batches before the end found that are checked one by one (>= the --clients of a stopped run; default 64)",
    )
    parser.add_argument("--retries", type=int, default=3, help="retries of a batch on 5xx or network errors")
    parser.add_argument("--progress", type=float, default=10.0, help="seconds between progress lines (default 10)")
    parser.add_argument("--repeat", type=int, default=50, help="measured runs of each query (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs of each query first (default 3)")
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL URL of the archive's database, for its size and row counts"
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="report the CPU time per instance of this process and its children (repeat it for the database)",
    )
    parser.add_argument("--token", default=None, help="bearer token sent as 'Authorization: Bearer TOKEN'")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds (default 300)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.load is None and not args.measure:
        parser.error("nothing to do: give --load N and/or --measure")
    if args.load is not None and args.load < 1:
        parser.error("--load must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    """Probe, load, print the database figures, measure."""
    if args.load is not None:
        scale = args.scale if args.scale is not None else args.load / FULL_INSTANCES
        instances = args.load
    else:
        scale = args.scale if args.scale is not None else 1.0
        instances = args.instances or round(FULL_INSTANCES * scale)
    plan = Plan(args.seed, instances, scale)
    generator = Generator(plan)
    server = Server(args.base_url, args.token, args.timeout)
    report: dict[str, Any] = {"base_url": args.base_url, "argv": sys.argv[1:], "seed": args.seed, "scale": scale}
    per_study = plan.instances / plan.studies
    print(
        f"plan (seed {args.seed}, scale {scale:g}): {plan.instances:,} instances, {plan.patients:,} patients, "
        f"{plan.studies:,} studies ({per_study:g} instances each, {SERIES_PER_STUDY} series), "
        f"~{generator.templates['CT'].size / 1000:.1f} KB per instance"
    )
    status = 0
    total = math.ceil(plan.instances / BATCH)
    with server.client() as client:
        t0 = time.perf_counter()
        last, probes = loaded_batches(client, generator)
        # The batches just before the end found may have holes (requests in flight when a run was stopped).
        window = range(max(0, last + 1 - args.resume_margin), last + 1) if args.load is not None else range(0)
        holes = [k for k in window if not stored(client, generator, k)]
        probe_ms = (time.perf_counter() - t0) * 1000
    loaded = min(plan.instances, (last + 1) * BATCH)
    print(
        f"probe: the first {loaded:,} instances are stored ({len(holes)} of the {len(window)} batches before the end "
        f"missing; {probes + len(window)} QIDO-RS probes, {probe_ms:.0f} ms)"
    )

    if args.load is not None:
        todo = list(range(total)) if args.from_start else [*holes, *range(last + 1, total)]
        if not todo:
            print("load: everything is stored already (--from-start sends it again)")
        else:
            print(
                f"load: sending {len(todo):,} batches of {BATCH} from instance {todo[0] * BATCH:,} "
                f"with {args.clients} clients"
            )
            run = load(server, generator, args.clients, todo, args.progress, args.retries, args.server_pid)
            srv = f", server CPU {run.server_cpu / run.instances * 1000:.2f} ms/instance" if run.server_cpu else ""
            print(
                f"load: {run.instances:,} instances sent in {run.seconds:.1f} s = {run.rate:.0f} instances/s, "
                f"{run.failed} failed; client CPU {run.client_cpu / max(1, run.instances) * 1e6:.0f} us/instance{srv}"
            )
            for error in run.errors[:10]:
                print(f"  {error}")
            report["load"] = {**asdict(run), "rate": run.rate}
            status = 1 if run.failed else 0
        loaded = plan.instances

    if args.database_url:
        stats = database_stats(args.database_url)
        print_database(stats)
        report["database"] = stats

    if args.measure:
        queries = Queries(plan, loaded)
        print(f"measure: {queries.studies:,} stored studies of {queries.patients:,} patients; {args.repeat} runs each")
        rows = measure(server, queries, args.repeat, args.warmup, args.seed)
        print()
        print_latencies(rows)
        report["queries"] = [
            {
                "name": r.name,
                "example": r.example,
                "n": len(r.latencies),
                "p50_ms": r.percentile(50) if r.latencies else None,
                "p95_ms": r.percentile(95) if r.latencies else None,
                "max_ms": max(r.latencies) * 1000 if r.latencies else None,
                "results": r.results,
                "errors": r.errors[:5],
            }
            for r in rows
        ]
        if any(r.errors for r in rows):
            status = 1
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
    return status


if __name__ == "__main__":
    sys.exit(main())
