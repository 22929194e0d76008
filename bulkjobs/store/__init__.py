"""The SQLite materialized view: schema, the writer fed from Kafka, the reader the API uses."""
