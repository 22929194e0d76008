"""The Kafka contract: topic names, keys and message schemas, how records are cut into batches,
topic creation, and the clients (with Tansu's workarounds) that every process uses."""
