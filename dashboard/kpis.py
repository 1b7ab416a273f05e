"""Figures across sessions, per model and per stage (pure functions over session views)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from council.bus.members import model_of
from council.dashboard.view import SessionView

STAGES = ("opinions", "reviews", "synthesis")


@dataclass(frozen=True)
class ModelFigures:
    model: str
    tokens: int
    """Prompt and completion tokens the model spent, chairman synthesis included."""
    mean_latency_ms: float
    tokens_per_s: float
    mean_score_received: float
    success_rate: float
    agreement: float
    """1 minus the mean distance of its review scores from the other reviewers' mean, /9."""


def _model_of(view: SessionView, member: str) -> str:
    if member in view.opinions:
        return view.opinions[member].model
    return model_of(member)


def model_figures(views: list[SessionView]) -> list[ModelFigures]:
    tokens: dict[str, int] = defaultdict(int)
    latencies: dict[str, list[float]] = defaultdict(list)
    completion: dict[str, int] = defaultdict(int)
    busy_ms: dict[str, float] = defaultdict(float)
    received: dict[str, list[float]] = defaultdict(list)
    answered: dict[str, int] = defaultdict(int)
    asked: dict[str, int] = defaultdict(int)
    distance: dict[str, list[float]] = defaultdict(list)
    for view in views:
        if view.final:
            for model, used in view.final.usage_by_model.items():
                tokens[model] += used.prompt_tokens + used.completion_tokens
        for member in view.started.plan.members if view.started else []:
            asked[_model_of(view, member)] += 1
        for o in view.opinions.values():
            answered[o.model] += 1
            latencies[o.model].append(o.latency_ms)
            completion[o.model] += o.usage.completion_tokens
            busy_ms[o.model] += o.latency_ms
        by_reviewed: dict[str, list[float]] = defaultdict(list)
        for r in view.reviews:
            model = _model_of(view, r.reviewed)
            received[model].append(r.score)
            by_reviewed[r.reviewed].append(r.score)
            if r.latency_ms:
                latencies[_model_of(view, r.reviewer)].append(r.latency_ms)
        for r in view.reviews:
            others = list(by_reviewed[r.reviewed])
            others.remove(r.score)
            if others:
                gap = abs(r.score - statistics.fmean(others)) / 9
                distance[_model_of(view, r.reviewer)].append(gap)
    models = sorted(set(asked) | set(tokens))
    return [
        ModelFigures(
            model=m,
            tokens=tokens[m],
            mean_latency_ms=statistics.fmean(latencies[m]) if latencies[m] else 0.0,
            tokens_per_s=completion[m] / (busy_ms[m] / 1000) if busy_ms[m] else 0.0,
            mean_score_received=statistics.fmean(received[m]) if received[m] else 0.0,
            success_rate=answered[m] / asked[m] if asked[m] else 0.0,
            agreement=1 - statistics.fmean(distance[m]) if distance[m] else 0.0,
        )
        for m in models
    ]


def stage_totals(views: list[SessionView]) -> list[dict[str, object]]:
    """One row per finished session and stage: tokens and wall time."""
    rows: list[dict[str, object]] = []
    for view in views:
        if not view.final:
            continue
        for stage in (*STAGES, "total"):
            used = view.final.usage.get(stage)
            rows.append(
                {
                    "session": view.session_id,
                    "stage": stage,
                    "prompt tokens": used.prompt_tokens if used else 0,
                    "completion tokens": used.completion_tokens if used else 0,
                    "wall time s": view.final.latency_ms.get(stage, 0.0) / 1000,
                }
            )
    return rows
