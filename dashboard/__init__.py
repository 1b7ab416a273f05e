"""council.dashboard: a Streamlit client of the bus (asks, watches, replays, measures)."""
