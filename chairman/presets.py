"""Named councils: a question names one ("fast", "deliberate", ...) instead of its
members, chairman, strategy and review mode. They are the chairman's to define, so
that every client (the Chat page, `council chat`, the API's models, MCP) lists
the same ones from the bus (``council.presets``) and none keeps a copy."""

from __future__ import annotations

import msgspec

from council.bus.members import model_of
from council.bus.messages import DEFAULT_PRESET as DEFAULT
from council.bus.messages import Preset, PresetInfo, Question

BUILT_IN: dict[str, Preset] = {
    "fast": Preset(
        summary="the default members; a majority's answer stands, else the chairman's model's "
        "own opinion: never a review or a synthesis",
        strategy="majority-or-chairman",
    ),
    "deliberate": Preset(
        summary="the default members; every stage, always: opinions, pairwise reviews, "
        "the chairman's synthesis",
        strategy="synthesize",
        mode="pairwise",
    ),
    "methods": Preset(
        summary="three samples of the 1.5B and two that answer by a program run in the "
        "sandbox; an answer both methods agree on stands, else the most members' answer",
        members=[
            "qwen2.5-coder-1.5b",
            "qwen2.5-coder-1.5b+code",
            "qwen2.5-coder-1.5b#2",
            "qwen2.5-coder-1.5b+code#2",
            "qwen2.5-coder-1.5b#3",
        ],  # fmt: skip
        strategy="across-methods",
        mode="compute",
    ),
    "mixed": Preset(
        summary="three distinct models (1.5B, 0.5B, 135M): a majority's answer stands, "
        "else reviews and the synthesis (their agents must serve them)",
        members=["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"],
        strategy="majority-then-synthesize",
    ),
}

SETTING_HELP = (
    "named councils besides the built-in "
    + ", ".join(BUILT_IN)
    + ': a JSON object, name -> {"summary", "members", "chairman", "strategy", "mode"} '
    "(a field left out is the default; a name given replaces the built-in one)"
)


class BadPresets(ValueError):
    pass


def table(setting: str) -> dict[str, Preset]:
    """The built-in presets with those of ``COUNCIL_PRESETS`` over them."""
    if not setting.strip():
        return dict(BUILT_IN)
    try:
        given = msgspec.json.decode(setting, type=dict[str, Preset])
    except msgspec.DecodeError as exc:  # ValidationError is one
        raise BadPresets(f"COUNCIL_PRESETS: {exc}") from None
    bad = [name for name in given if not name.replace("-", "").isalnum() or name == DEFAULT]
    if bad:
        raise BadPresets(f"COUNCIL_PRESETS: names are letters, digits and '-', not {bad}")
    return {**BUILT_IN, **given}


def applied(question: Question, preset: Preset) -> Question:
    """``question`` with the preset's council wherever it names none of its own (its
    review mode, which always has a value, is the preset's when the preset sets one)."""
    return msgspec.structs.replace(
        question,
        members=question.members or list(preset.members),
        chairman=question.chairman or preset.chairman,
        strategy=question.strategy or preset.strategy,
        mode=preset.mode or question.mode,
    )


def listed(
    table: dict[str, Preset], default: Preset, answering: set[str], chairing: set[str]
) -> list[PresetInfo]:
    """The chairman's defaults (``default``, every field set), then every preset, each
    with the defaults filled in and with the models it lacks now: those no agent
    serves as a member (``answering``) or as the chairman (``chairing``)."""

    def info(name: str, preset: Preset) -> PresetInfo:
        members = list(preset.members or default.members)
        chairman = preset.chairman or default.chairman
        lacking = [model_of(m) for m in members if model_of(m) not in answering]
        if chairman not in chairing:
            lacking.append(chairman)
        return PresetInfo(
            name=name,
            summary=preset.summary,
            members=members,
            chairman=chairman,
            strategy=preset.strategy or default.strategy,
            mode=preset.mode or default.mode or "pairwise",
            missing=list(dict.fromkeys(lacking)),
        )

    return [info(DEFAULT, default), *(info(name, preset) for name, preset in table.items())]
