"""council.agents."""
