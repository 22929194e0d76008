"""Pure domain rules: record actions, object identity and routing, job state and counts.

Nothing here imports Kafka, Faust, aiohttp or SQLite.
"""
