"""The Faust side: the worker app, its agents and timers, and the state they rebuild from topics."""
