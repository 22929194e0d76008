"""The Faust side: topics and message schemas, the worker app, its agents and the state they own."""
