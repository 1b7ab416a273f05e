"""The wire contract: every message council sends, as msgspec Structs (the session
events, stored in the stream, are in ``bus.events``).

JSON on the wire so ``nats sub 'council.>'`` stays readable. Evolution rules
(msgspec's): new fields get defaults and go at the end; a field never changes
type; a breaking change bumps ``SCHEMA_VERSION``. Constraints live on the
types, so bad input fails at decode with a precise message.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

SCHEMA_VERSION = 3
"""3: sessions and conversations belong to people: their ids begin with the person's
token (``alice.4f3a9c0d1e2b5a67``), and a person asks, stops and forgets on subjects of
their own (``council.ask.alice``). 2: ``session_started`` records the session's whole
plan (``SessionPlan``), with the strategy in force."""
MAX_QUESTION_CHARS = 4000
MAX_MEMBERS = 8
MAX_DOCUMENT_CHARS = 200_000
"""The text of all the documents a question carries: inline, well under the NATS
server's default max_payload (1 MB) with the rest of the question."""
MAX_DOCUMENTS = 8
MAX_STORED_CHARS = 5_000_000
"""The text of one file sent through the object store, a part at a time."""
PART_CHARS = 100_000
"""A part of a stored file's text: at most 400 KB of UTF-8, under any max_payload."""

Stage = Literal["opinions", "reviews", "synthesis"]
ReviewMode = Literal["pairwise", "rank", "compute"]
"""``compute``: each reviewer computes the answer with a program in the sandbox and
scores the others by comparing final answers in code, instead of in words."""
Score = Annotated[int, Meta(ge=1, le=10)]
NonNegative = Annotated[int, Meta(ge=0)]


def now() -> float:
    return time.time()


class ChatMessage(Struct, frozen=True):
    role: Literal["system", "user", "assistant"]
    content: str


class Usage(Struct):
    prompt_tokens: NonNegative = 0
    completion_tokens: NonNegative = 0
    prompt_reused: NonNegative = 0
    """Of the prompt tokens, those not evaluated again: their state was copied from a
    call that had the same prefix (the batched runtime's shared prefixes)."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.prompt_reused + other.prompt_reused,
        )


class GenerationOptions(Struct, kw_only=True):
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.7
    seed: int | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=8192)] = 512


# --- council.ask ---------------------------------------------------------


ConversationId = Annotated[
    str, Meta(pattern=r"^([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)?$", max_length=128)
]
"""The session id of a conversation's first turn: two subject tokens, its person's and
its own."""


class Document(Struct, kw_only=True, frozen=True):
    """A file a question carries, as text (``bus.documents`` reads files into it)."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    text: str
    cut: NonNegative = 0
    """Characters the chairman left out of the end of ``text`` to keep it within the
    document budget: the stages saw the rest."""
    stored: str = ""
    """A file too large to go inline: its text is in the documents' object store under
    this key, sent before the question (``DocumentPart``); ``text`` is then "" until
    the chairman reads it."""
    chars: NonNegative = 0
    """A stored file's characters in all."""


class Turn(Struct, kw_only=True):
    """One finished turn of a conversation, stored on ``council.conversation.<cid>.<sid>``:
    what was asked and what the council answered (not its stages)."""

    question: str
    answer: str
    conversation: str = ""
    session_id: str = ""
    conclusion: str = ""
    ts: float = 0.0
    v: int = SCHEMA_VERSION
    preset: str = ""
    """The named council that answered ("" for the chairman's defaults)."""
    documents: list[Document] = []
    """The files this turn's question carried, as the stages saw them: a follow-up sees
    them too."""


class Question(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A question for the council. Empty ``members``/``chairman`` mean the defaults.

    Fields left at their defaults are not sent (``omit_defaults``), so a client asks a
    chairman that predates a field it does not use.

    ``question`` is checked by the chairman (not here) so that an empty or
    oversized one gets its own ``Rejected`` reason.
    """

    question: str
    members: Annotated[list[str], Meta(max_length=MAX_MEMBERS)] = []
    chairman: str = ""
    mode: ReviewMode = "pairwise"
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    seed: int | None = None
    alone: bool = False
    """Ask the one member named in ``members`` alone: no reviews, no synthesis, its
    opinion is the answer. The baseline a council is measured against."""
    v: int = SCHEMA_VERSION
    max_tokens: Annotated[int, Meta(ge=1, le=8192)] | None = None
    """Tokens per opinion, instead of the chairman's setting (a baseline at its best
    needs room for its whole working)."""
    strategy: str = ""
    """How the chairman concludes this session, instead of its setting ("": the setting)."""
    conversation: ConversationId = ""
    """A follow-up in this conversation (the id an earlier ``Accepted`` gave): every
    stage sees its earlier turns. "" starts a new conversation."""
    context: Annotated[list[Turn], Meta(max_length=256)] = []
    """Earlier turns the client keeps itself (an OpenAI-style messages array), seen
    as a conversation's are; ignored when ``conversation`` is given."""
    documents: Annotated[list[Document], Meta(max_length=MAX_DOCUMENTS)] = []
    """Files the question carries (text; a PDF's extracted), at most MAX_DOCUMENT_CHARS
    in all: every stage sees them, and so does a follow-up."""
    preset: str = ""
    """A named council (``Presets``): its members, chairman, strategy and review mode
    where the question names none of its own. "" is the chairman's defaults."""
    remember: bool = True
    """Keep the answer as a turn of a conversation its person lists and follows up.
    A measurement (``council eval``) says False: its sessions' events are stored all
    the same, but a person's own conversations are not pushed out of sight."""


class Accepted(Struct, kw_only=True, tag="accepted", tag_field="type"):
    session_id: str
    members: list[str]
    chairman: str
    mode: ReviewMode
    v: int = SCHEMA_VERSION
    strategy: str = ""
    """How the session concludes (the question's choice, else the chairman's setting)."""
    conversation: str = ""
    """The conversation this session is a turn of: a follow-up names it."""
    preset: str = ""
    """The named council asked, if one was."""


RejectReason = Literal[
    "bad_request",
    "empty_question",
    "question_too_long",
    "documents_too_long",
    "unknown_model",
    "unknown_persona",
    "unknown_strategy",
    "unknown_preset",
    "unknown_conversation",
    "duplicate_member",
    "too_few_members",
    "too_many_members",
    "busy",
    "not_yours",
    "old_contract",
]


class Rejected(Struct, kw_only=True, tag="rejected", tag_field="type"):
    reason: RejectReason
    detail: str = ""
    v: int = SCHEMA_VERSION
    retry_after_s: float = 0.0
    """``busy``: about how long until a question of this person would be taken."""


AskReply = Accepted | Rejected


# --- council.document.<person> ---------------------------------------------


class DocumentPart(Struct, kw_only=True, forbid_unknown_fields=True):
    """One part of a large file's text, sent in order before the question that carries
    the file (``Document.stored``); a chairman keeps each in the object store."""

    upload: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    part: Annotated[int, Meta(ge=0, lt=MAX_STORED_CHARS // PART_CHARS + 1)]
    text: Annotated[str, Meta(max_length=PART_CHARS)]
    v: int = SCHEMA_VERSION


class DocumentKept(Struct, kw_only=True, tag="document_kept", tag_field="type"):
    key: str
    """The file's key so far: its person's, then the upload's (``Document.stored``)."""
    v: int = SCHEMA_VERSION


DocumentReply = DocumentKept | Rejected


# --- council.presets -----------------------------------------------------


class Preset(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A named council: what a question naming it runs with. An empty field is the
    chairman's default for it."""

    summary: str = ""
    members: list[str] = []
    chairman: str = ""
    strategy: str = ""
    mode: ReviewMode | Literal[""] = ""


class PresetInfo(Struct, kw_only=True):
    """A preset as a chairman runs it, its defaults filled in: what a client lists."""

    name: str
    summary: str
    members: list[str]
    chairman: str
    strategy: str
    mode: ReviewMode
    missing: list[str] = []
    """Models it needs that no agent serves now: asking it is refused until one does."""


DEFAULT_PRESET = "default"
"""The name under which a chairman lists its own defaults among its presets: a
question naming it (or none) runs them."""


class Presets(Struct, kw_only=True, tag="presets", tag_field="type"):
    """A chairman's answer on ``council.presets``: its defaults first (named
    ``default``), then every preset."""

    presets: list[PresetInfo]
    v: int = SCHEMA_VERSION


OLD_CONTRACT = Rejected(
    reason="old_contract",
    detail=f"this council speaks contract v{SCHEMA_VERSION}: a person asks on "
    "council.ask.<person> (upgrade council on this client)",
)
"""The answer to a client of contract v2, which asked on ``council.ask``."""


class StopSession(Struct, kw_only=True, forbid_unknown_fields=True):
    """Stop a running session (``council.stop.<person>``): the chairman running it ends
    it with ``session_cancelled`` if it is that person's, refuses with ``not_yours``
    if not; the others stay silent."""

    session_id: str
    reason: str = ""
    v: int = SCHEMA_VERSION


class ForgetConversation(Struct, kw_only=True, forbid_unknown_fields=True):
    """Delete a conversation (``council.forget.<person>``): its turns and every event of
    its sessions leave the COUNCIL stream; one of another person's is ``not_yours``."""

    conversation: ConversationId
    v: int = SCHEMA_VERSION


class Forgotten(Struct, kw_only=True, tag="forgotten", tag_field="type"):
    conversation: str
    sessions: list[str]
    """The sessions whose events were deleted ([]: no such conversation)."""
    v: int = SCHEMA_VERSION


class Stopped(Struct, kw_only=True, tag="stopped", tag_field="type"):
    session_id: str
    stage: str
    """Where the session was when it stopped."""
    v: int = SCHEMA_VERSION


StopReply = Stopped | Rejected
ForgetReply = Forgotten | Rejected


# --- council.agent.<agent>.<kind> -----------------------------------------


class AgentRequest(Struct, kw_only=True):
    session_id: str
    member: str
    model: str
    messages: list[ChatMessage]
    options: GenerationOptions = msgspec.field(default_factory=GenerationOptions)
    timeout_s: Annotated[float, Meta(gt=0)] = 120.0
    v: int = SCHEMA_VERSION


class OpinionRequest(AgentRequest, tag="opinion", tag_field="type"):
    pass


class ReviewRequest(AgentRequest, tag="review", tag_field="type"):
    """One review call. ``labels`` are the anonymous labels the verdict may name."""

    mode: ReviewMode = "pairwise"
    labels: list[str] = []
    check_first: bool = False
    """Pairwise: the reviewer writes its check (the justification) before its score,
    so that it works the answer out before it judges."""


class SynthesisRequest(AgentRequest, tag="synthesize", tag_field="type"):
    pass


class Completion(Struct, kw_only=True, tag="completion", tag_field="type"):
    member: str
    model: str
    text: str
    usage: Usage
    latency_ms: float
    runtime: str = ""
    v: int = SCHEMA_VERSION


class PairwiseVerdict(Struct, kw_only=True):
    """What a pairwise reviewer must return (score first: it is what we need)."""

    score: int
    justification: str = ""


class RankVerdict(Struct, kw_only=True):
    """What a rank-mode reviewer must return: labels best first."""

    ranking: list[str]
    justification: str = ""


class ReviewResult(Struct, kw_only=True, tag="review_result", tag_field="type"):
    """Scores by anonymous label, already clamped to 1–10."""

    member: str
    model: str
    scores: dict[str, float]
    justification: str
    usage: Usage
    latency_ms: float
    repaired: bool = False
    runtime: str = ""
    v: int = SCHEMA_VERSION


AgentErrorCode = Literal[
    "bad_request",
    "unknown_model",
    "timeout",
    "runtime_error",
    "invalid_output",
    "no_responders",
    "agent_lost",
    "not_needed",
    "tool_unavailable",
    "program_failed",
]


class CancelCalls(Struct, kw_only=True, tag="cancel_calls", tag_field="type"):
    """The chairman no longer needs these members' calls in a session (none named:
    all of them): agents stop generating them and free their slots."""

    session_id: str
    members: list[str] = []
    reason: str = ""
    v: int = SCHEMA_VERSION


class AgentError(Struct, kw_only=True, tag="agent_error", tag_field="type"):
    code: AgentErrorCode
    detail: str
    v: int = SCHEMA_VERSION


WORKING_EVERY_S = 1.0
"""How often an agent says it is still working on a request (queued or generating)."""
WORKING_FIRST_S = 0.25
"""When it first says so: a call done sooner sends no note at all."""


class Working(Struct, kw_only=True, tag="working", tag_field="type"):
    """Sent to a request's reply subject ``WORKING_FIRST_S`` after receipt, then every
    ``WORKING_EVERY_S`` until the reply: a requester that hears nothing for a while
    knows the agent is gone and asks another one instead of waiting out the deadline."""

    node: str
    v: int = SCHEMA_VERSION


AgentReply = Completion | ReviewResult | AgentError
AgentResponse = AgentReply | Working
AnyAgentRequest = OpinionRequest | ReviewRequest | SynthesisRequest


# --- council.tool.run ---------------------------------------------------------

MAX_PROGRAM_CHARS = 20_000

ProgramOutcome = Literal[
    "ok",
    "error",
    "bad_request",
    "timeout",
    "cpu_limit",
    "memory_limit",
    "process_limit",
    "output_limit",
    "killed",
    "unavailable",
]
"""How a program ended: ``ok`` (exit 0), ``error`` (another exit code), or the limit
that stopped it; ``unavailable`` when the tool cannot sandbox (no bubblewrap)."""


class RunProgram(Struct, kw_only=True, forbid_unknown_fields=True):
    """A program a model wrote, to run in the sandbox: hostile input, always."""

    code: Annotated[str, Meta(min_length=1, max_length=MAX_PROGRAM_CHARS)]
    language: Literal["python"] = "python"
    session_id: str = ""
    """For the tool's logs only: which session asked."""
    v: int = SCHEMA_VERSION


class ProgramResult(Struct, kw_only=True, tag="program_result", tag_field="type"):
    outcome: ProgramOutcome
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    """The last of it: a traceback's end is what a model needs to mend its program."""
    wall_ms: float = 0.0
    detail: str = ""
    """Why the outcome, in words (which limit, what is missing)."""
    v: int = SCHEMA_VERSION

    @property
    def printed(self) -> str:
        """What the program printed, when it ran to the end."""
        return self.stdout.strip() if self.outcome == "ok" else ""


# --- council.live.<sid>.<stage>.<member> (core NATS, not stored) -------------


class TokenDelta(Struct, kw_only=True):
    session_id: str
    stage: Stage
    member: str
    text: str
    index: int
    done: bool = False
    v: int = SCHEMA_VERSION


# --- council.health.<node> and council.agents.roster ------------------------


class ModelStatus(Struct, kw_only=True):
    name: str
    runtime: str
    status: Literal["loading", "ready", "error"] = "ready"
    in_flight: int = 0
    detail: str = ""
    kinds: list[str] = []
    """Request kinds served for this model: opinion, review, synthesize."""
    taken: int = 0
    """Requests for this model the agent has taken and not answered yet (generating
    or waiting for a slot): how busy it is, for least-busy dispatch."""


class NodeHealth(Struct, kw_only=True):
    node: str
    role: str
    pid: int
    cpu_percent: float
    ram_percent: float
    rss_mb: float
    models: list[ModelStatus] = []
    in_flight: int = 0
    generation_slots: int = 0
    threads_per_generation: int = 0
    ts: float = msgspec.field(default_factory=now)
    v: int = SCHEMA_VERSION
    waiting: int = 0
    """A chairman's sessions waiting for a slot (their person's fair share in use)."""


class AgentInfo(Struct, kw_only=True):
    node: str
    models: list[ModelStatus]
    v: int = SCHEMA_VERSION
