"""The composition root: the settings gathered from the roles' own declarations, and the
roles built and joined from them (in processes of their own, or in one for the
tests and benchmarks). `council` (cli/), bench/ and the tests import it; no role does."""
