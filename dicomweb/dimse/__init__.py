"""DICOM networking (DIMSE over TCP, PS3.7 and PS3.8): the second transport onto the same archive."""
