"""Everything that talks to PostgreSQL: the pool and schema (pool), the embedded server, and the archive index."""
