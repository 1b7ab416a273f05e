"""The transport: the connection, inboxes, the COUNCIL stream and its event log, the
embedded server, heartbeats."""
