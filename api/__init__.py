"""The council as an OpenAI-compatible model over HTTP: a client of the bus like the
dashboard, importing only `bus/`."""
