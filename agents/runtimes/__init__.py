"""council.agents.runtimes."""
