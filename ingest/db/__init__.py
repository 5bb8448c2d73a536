"""The schema (SQLAlchemy Core tables), engines, the embedded server and migrations."""
