"""bulkjobs: bulk jobs over HTTP, applied by Kafka stream processors, served from a SQLite view."""

__version__ = "0.1.0"
