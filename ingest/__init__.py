"""hr-ingest: copies HappyRobot runs into relational PostgreSQL tables."""

__version__ = "0.1.0"
