"""The tools role: runs programs that models wrote, in a sandbox, for the chairman."""
