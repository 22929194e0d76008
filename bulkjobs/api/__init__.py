"""The aiohttp front door: request parsing, routing records into batches, publishing, reading the view."""
