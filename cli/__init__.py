"""council.cli."""
