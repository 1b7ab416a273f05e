"""council.bus: subjects, messages and connection glue shared by every role."""
