"""Health: each node's last heartbeat; stale nodes flagged."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from council.dashboard.common import STALE_AFTER_S, feed

st.title("Health")
current = feed()


@st.fragment(run_every=2.0)
def nodes() -> None:
    beats = current.health()
    if not beats:
        st.info("No heartbeats yet.")
        return
    stale = [h.node for h, age in beats if age > STALE_AFTER_S]
    if stale:
        st.warning(f"Stale (no heartbeat for {STALE_AFTER_S:.0f} s): {', '.join(stale)}")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "node": h.node,
                    "role": h.role,
                    "state": "stale" if age > STALE_AFTER_S else "ok",
                    "last seen s": round(age, 1),
                    "cpu %": h.cpu_percent,
                    "ram %": h.ram_percent,
                    "rss MB": h.rss_mb,
                    "models": ", ".join(f"{m.name} ({m.runtime}, {m.status})" for m in h.models),
                    "in flight": h.in_flight,
                    "waiting": h.waiting,
                    "generation slots": h.generation_slots,
                }
                for h, age in beats
            ]
        ),
        hide_index=True,
    )


nodes()
