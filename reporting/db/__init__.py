"""All SQL of the reporting API: functions that take a connection and plain values and return rows."""
