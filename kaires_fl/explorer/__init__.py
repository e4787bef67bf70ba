"""The audit explorer: a read-only web app that verifies, in its own process, what it shows."""
