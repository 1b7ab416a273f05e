"""council.chairman."""
