"""The radiology workflow JSON API (/api/radiology): scheduled studies, uploads, annotations, reports, templates."""
