"""The client: what any process that asks the council does (ask, follow, stop, read
conversations, export them, see who serves)."""
