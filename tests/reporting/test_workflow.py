"""reporting/workflow.py: the study and report workflows, generated identifiers and template placeholders (pure)."""

from __future__ import annotations

import datetime
import itertools
import re

import pytest

from dicomweb.errors import Conflict
from dicomweb.uids import is_valid_uid
from reporting.workflow import (
    MODALITY_NAMES,
    PLACEHOLDERS,
    REPORT_EDITS,
    STUDY_TRANSITIONS,
    Modality,
    ReportStatus,
    StudyStatus,
    accession_number,
    check_addendum,
    check_report_edit,
    check_study_transition,
    check_verification,
    fill,
    new_uid,
    unknown_placeholders,
)

S, R = StudyStatus, ReportStatus

# The issue's study workflow: scheduled → in_progress → completed → reported, cancelled from the first two.
STUDY_ALLOWED = {
    (S.SCHEDULED, S.IN_PROGRESS),
    (S.SCHEDULED, S.CANCELLED),
    (S.IN_PROGRESS, S.COMPLETED),
    (S.IN_PROGRESS, S.CANCELLED),
    (S.COMPLETED, S.REPORTED),
}
# What an update may set: a draft stays a draft or becomes preliminary; a preliminary stays so; final is reached
# only by verification, and a final report cannot be updated at all.
REPORT_ALLOWED = {(R.DRAFT, R.DRAFT), (R.DRAFT, R.PRELIMINARY), (R.PRELIMINARY, R.PRELIMINARY)}


def conflict(call: object, *args: object) -> Conflict:
    assert callable(call)
    with pytest.raises(Conflict) as raised:
        call(*args)
    assert raised.value.status == 409
    return raised.value


class TestStudyWorkflow:
    """check_study_transition over every pair of states."""

    @pytest.mark.parametrize(("current", "new"), sorted(STUDY_ALLOWED))
    def test_allowed(self, current: StudyStatus, new: StudyStatus) -> None:
        """Each transition of the issue's workflow passes."""
        check_study_transition(current, new)

    @pytest.mark.parametrize(
        ("current", "new"), sorted(set(itertools.product(StudyStatus, StudyStatus)) - STUDY_ALLOWED)
    )
    def test_refused(self, current: StudyStatus, new: StudyStatus) -> None:
        """Every other pair (staying put included) is 409 listing the allowed next states, sorted."""
        error = conflict(check_study_transition, current, new)
        allowed = sorted(str(n) for c, n in STUDY_ALLOWED if c is current)
        assert error.extra == {"currentStatus": str(current), "allowedTransitions": allowed}
        assert str(current) in error.detail and str(new) in error.detail

    def test_table_is_the_issues(self) -> None:
        """The table itself holds exactly the issue's transitions; reported and cancelled are terminal."""
        assert {(c, n) for c, nexts in STUDY_TRANSITIONS.items() for n in nexts} == STUDY_ALLOWED
        assert STUDY_TRANSITIONS[S.REPORTED] == STUDY_TRANSITIONS[S.CANCELLED] == frozenset()


class TestReportEdits:
    """check_report_edit over every pair of report states."""

    @pytest.mark.parametrize(("current", "new"), sorted(REPORT_ALLOWED))
    def test_allowed(self, current: ReportStatus, new: ReportStatus) -> None:
        """A draft may stay a draft or become preliminary; a preliminary report stays preliminary."""
        check_report_edit(current, new)

    @pytest.mark.parametrize("new", list(ReportStatus))
    def test_final_is_immutable(self, new: ReportStatus) -> None:
        """Nothing changes a final report; the detail points at addenda."""
        error = conflict(check_report_edit, R.FINAL, new)
        assert error.extra == {"currentStatus": "final", "allowedTransitions": []}
        assert "addendum" in error.detail

    @pytest.mark.parametrize("current", [R.DRAFT, R.PRELIMINARY])
    def test_final_only_by_verification(self, current: ReportStatus) -> None:
        """An update cannot make a report final: 409 pointing at verify."""
        error = conflict(check_report_edit, current, R.FINAL)
        assert "verif" in error.detail
        assert error.extra["allowedTransitions"] == sorted(str(s) for s in REPORT_EDITS[current])

    def test_preliminary_cannot_go_back_to_draft(self) -> None:
        """Preliminary → draft is refused, listing what is allowed."""
        error = conflict(check_report_edit, R.PRELIMINARY, R.DRAFT)
        assert error.extra == {"currentStatus": "preliminary", "allowedTransitions": ["preliminary"]}

    def test_every_pair_covered(self) -> None:
        """The allowed pairs above are exactly those the function lets through."""
        passed = set()
        for current, new in itertools.product(ReportStatus, ReportStatus):
            try:
                check_report_edit(current, new)
            except Conflict:
                continue
            passed.add((current, new))
        assert passed == REPORT_ALLOWED


class TestVerification:
    """check_verification and check_addendum."""

    @pytest.mark.parametrize("report", [R.DRAFT, R.PRELIMINARY])
    @pytest.mark.parametrize("study", [S.COMPLETED, S.REPORTED])
    def test_allowed(self, report: ReportStatus, study: StudyStatus) -> None:
        """A draft or preliminary report is signed on a completed or reported study."""
        check_verification(report, study)

    @pytest.mark.parametrize("study", [S.SCHEDULED, S.IN_PROGRESS, S.CANCELLED])
    def test_study_not_completed(self, study: StudyStatus) -> None:
        """Before the examination is completed (or once cancelled) nothing is signed; the body names the state."""
        error = conflict(check_verification, R.DRAFT, study)
        assert error.extra == {"studyStatus": str(study)}

    @pytest.mark.parametrize("study", list(StudyStatus))
    def test_signed_once(self, study: StudyStatus) -> None:
        """A final report is not signed again, whatever the study's state."""
        assert conflict(check_verification, R.FINAL, study).extra == {"currentStatus": "final"}

    def test_addendum_only_to_final(self) -> None:
        """Addenda are for final reports; a draft or preliminary one is edited instead."""
        check_addendum(R.FINAL)
        for status in (R.DRAFT, R.PRELIMINARY):
            assert conflict(check_addendum, status).extra == {"currentStatus": str(status)}


class TestIdentifiers:
    """accession_number and new_uid."""

    def test_accession_number(self) -> None:
        """ACC, the day, five random hex digits: 16 characters, an SH value."""
        number = accession_number(datetime.date(2024, 3, 15))
        assert re.fullmatch(r"ACC20240315[0-9A-F]{5}", number) and len(number) == 16

    def test_accession_numbers_differ(self) -> None:
        """Two numbers of a day are (almost always) different."""
        assert len({accession_number() for _ in range(50)}) > 45

    def test_new_uid(self) -> None:
        """2.25 followed by a UUID's integer: a valid UID, unique."""
        uids = {new_uid() for _ in range(100)}
        assert len(uids) == 100
        assert all(uid.startswith("2.25.") and is_valid_uid(uid) for uid in uids)

    def test_modality_names(self) -> None:
        """Every modality has a readable name."""
        assert set(MODALITY_NAMES) == set(Modality)


class TestPlaceholders:
    """unknown_placeholders and fill."""

    def test_known(self) -> None:
        """A template using every known placeholder has no unknown one."""
        content = " ".join("{{" + name + "}}" for name in sorted(PLACEHOLDERS))
        assert unknown_placeholders(content) == []

    def test_unknown_in_order_once(self) -> None:
        """Unknown names are reported once each, in order of appearance; spaces inside braces are allowed."""
        content = "{{ foo }} {{patientName}} {{bar}} {{foo}} {{PatientName}}"
        assert unknown_placeholders(content) == ["foo", "bar", "PatientName"]

    def test_not_placeholders(self) -> None:
        """Single braces, empty braces and names starting with a digit are plain text."""
        assert unknown_placeholders("{patientName} {{}} {{1x}} {{ }}") == []

    def test_fill(self) -> None:
        """Each placeholder is replaced by its value, repeated ones too, with or without inner spaces."""
        content = "Patient: {{patientName}} ({{ patientSex }}), {{modality}} {{modality}}."
        values = {"patientName": "Doe^Jane", "patientSex": "F", "modality": "CT"}
        assert fill(content, values) == "Patient: Doe^Jane (F), CT CT."

    def test_fill_unknown_value_empty(self) -> None:
        """A value not known for the study (None or missing) leaves the placeholder empty."""
        assert fill("[{{studyDescription}}][{{bodyPart}}]", {"studyDescription": None}) == "[][]"

    def test_fill_leaves_other_text(self) -> None:
        """Braces that are not placeholders stay as they are."""
        assert fill("{x} {{}} {{1a}}", {}) == "{x} {{}} {{1a}}"
