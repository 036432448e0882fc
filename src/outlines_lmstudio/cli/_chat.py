"""``outlines-lmstudio chat``: an interactive streaming chat with history."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import secrets
import shlex
import stat
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (
    CUT_OFF,
    CliError,
    ModelInfo,
    Session,
    add_model_option,
    add_sampling_options,
    connect,
    console,
    error_message,
    escape_controls,
    failure_report,
    for_terminal,
    resolve_llm,
    sampling_kwargs,
    set_mode,
    system_prompt,
    write_out,
)
from ._images import MAX_SIDE, Attachment, load_image, solid_image
from ._output_types import json_text
from ._prompt_signals import PromptSignals
from ._sigterm import leave_if_terminated
from ._text import check_options_text, check_text, stdin_lines_tolerant

if TYPE_CHECKING:
    from rich.console import Console

    from outlines_lmstudio import LMStudio

__all__ = ["COMMANDS", "HELP", "ChatSession", "Turn", "add_arguments", "run"]

HELP = "Chat with a model: streaming replies, history, images."
COMMANDS = {
    "/image PATH": "attach an image file to your next message",
    "/test-image COLOR WxH": "attach a solid-colour test image, e.g. /test-image red 64x64",
    "/clear": "forget the conversation (the system prompt and attached images stay)",
    "/model NAME": "switch to another model (the conversation stays)",
    "/save FILE": "save the conversation as JSON (any reasoning under its own key)",
    "/help": "show this help",
    "/exit": "leave (also /quit or Ctrl-D)",
    "//TEXT": "send a message that begins with / (as /TEXT)",
}
_COMMAND_LINES = tuple(f"  {name:<24}{text}" for name, text in COMMANDS.items())
"""The in-chat commands a line each, as ``--help`` and a piped ``/help`` show them."""
DESCRIPTION = (
    "An interactive chat; replies stream as they are generated. Ctrl-C stops a reply\n"
    "(it is cancelled on the server) and keeps the session. In-chat commands:\n\n"
    + "\n".join(_COMMAND_LINES)
    + f"\n\nImages over {MAX_SIDE} px on a side are downscaled before upload."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``chat`` options to ``parser``."""
    add_model_option(parser, "model key (default: a loaded LLM)")
    parser.add_argument("--system", type=system_prompt, metavar="TEXT", help="system prompt")
    parser.add_argument(
        "--hide-reasoning",
        action="store_true",
        help="do not show a reasoning model's thinking (/save still keeps it, apart)",
    )
    add_sampling_options(parser)


@dataclass
class Turn:
    """One message of the conversation."""

    role: str
    text: str
    images: list[Attachment] = field(default_factory=list)
    model: str | None = None
    stopped: bool = False
    reasoning: str = ""
    cut_off: str | None = None
    """LM Studio's stop reason of a reply cut off by a limit (``contextLengthReached``...)."""

    def record(self) -> dict[str, Any]:
        """Return the message as saved by ``/save`` (the reasoning apart from the content)."""
        data: dict[str, Any] = {"role": self.role, "content": self.text}
        if self.reasoning:
            data["reasoning"] = self.reasoning
        if self.images:
            data["images"] = [a.record() for a in self.images]
        if self.model:
            data["model"] = self.model
        if self.stopped:
            data["stopped"] = True
        if self.cut_off:
            data["cut_off"] = self.cut_off
        return data


class ChatSession:
    """The state of one chat and its commands.

    Parameters
    ----------
    session
        The connected session.
    info
        The model to start with.
    system
        The system prompt, if any.
    kwargs
        Inference keywords for every reply.
    out
        The console to talk to.
    show_reasoning
        Show a reasoning model's thinking (dimmed) before its answer.
    """

    def __init__(
        self,
        session: Session,
        info: ModelInfo,
        system: str | None,
        kwargs: dict[str, Any],
        out: Console,
        *,
        show_reasoning: bool = True,
    ) -> None:
        self.session = session
        self.show_reasoning = show_reasoning
        self.system = system
        self.kwargs = kwargs
        self.out = out
        self.history: list[Turn] = []
        self.pending: list[Attachment] = []
        self.info = info
        self.model = self._model(info)

    def _model(self, info: ModelInfo) -> LMStudio:
        from outlines_lmstudio import from_lmstudio

        return from_lmstudio(self.session.client, info.name)

    # -- output helpers ------------------------------------------------------------
    def help(self) -> None:
        """Print the in-chat commands.

        On a terminal, a description wraps under itself; piped, each is one line (found by
        a probe: they were cut at 80 columns, and wrapped under the command on a terminal).
        """
        from rich.padding import Padding
        from rich.table import Table
        from rich.text import Text

        if not self.out.is_terminal:
            for line in _COMMAND_LINES:
                self.out.print(line, soft_wrap=True)
            return
        if self.out.width < _HELP_BESIDE:  # found by a review: a word per row, cut short
            for usage, text in COMMANDS.items():
                self.out.print(Text(usage, style="bold"))
                self.out.print(Padding(Text(text), (0, 0, 0, 4)))
            return
        grid = Table.grid(padding=(0, 0))
        grid.add_column(style="bold", no_wrap=True, min_width=24)
        grid.add_column()
        for usage, text in COMMANDS.items():
            grid.add_row(usage, Text(text))
        self.out.print(Padding(grid, (0, 0, 0, 2)))

    def note(self, text: str) -> None:
        """Print an informational line (its control characters escaped)."""
        from rich.text import Text

        self.out.print(Text(escape_controls(text), style="dim"), soft_wrap=True)

    def problem(self, text: str) -> None:
        """Print a problem (the session goes on), its control characters escaped.

        Found by a review: a server's message with an escape sequence reached the terminal
        raw here (rich drops BEL, not ESC), where the command's error line escapes it.
        """
        from rich.text import Text

        self.out.print(Text(f"! {escape_controls(text)}", style="bold red"), soft_wrap=True)

    # -- the loop ------------------------------------------------------------------
    def loop(self) -> None:
        """Read lines until ``/exit`` or end of input."""
        vision = "yes" if self.info.vision else "no"
        self.note(
            f"Chatting with {self.info.shown} on {self.session.host} (vision: {vision}). "
            "/help lists the commands; /exit or Ctrl-D leaves; Ctrl-C stops a reply."
        )
        with PromptSignals() as signals:
            self._lines(signals)

    def _lines(self, signals: PromptSignals) -> None:
        from rich.text import Text

        first = True
        while True:
            try:
                with signals.prompt():
                    line = self.out.input(Text("you> ", style="bold green"))
            except EOFError:
                self.out.print()
                return
            except KeyboardInterrupt:
                self.out.print()
                leave_if_terminated()
                self.note("(Ctrl-C: type /exit or press Ctrl-D to leave)")
                continue
            if first:  # a byte order mark opening piped input is no text (as generate -)
                line, first = line.removeprefix("\ufeff"), False
            line = line.strip()
            if not line:
                continue
            try:
                check_text(line, "That line")
            except CliError as exc:
                self.problem(f"{exc.message} It was not sent.")
                continue
            if line.startswith("//"):  # a message that begins with "/": written "//..."
                line = line[1:]
            elif line.startswith("/"):
                if not self.command(line):
                    return
                continue
            try:
                self.send(line)
            except KeyboardInterrupt:  # after the reply, while its end was being written
                self.out.print()
                leave_if_terminated()
                self.note("(Ctrl-C: type /exit or press Ctrl-D to leave)")

    def command(self, line: str) -> bool:
        """Run an in-chat command; return False to leave."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        name = name.lower()
        try:
            if name in ("/exit", "/quit"):
                return False
            if name == "/help":
                self.help()
            elif name == "/clear":
                self.history.clear()
                kept = f" ({len(self.pending)} attached image(s) kept for your next message)"
                self.note("Conversation cleared" + (kept if self.pending else "") + ".")
            elif name == "/image":
                self.attach(lambda: load_image(os.path.expanduser(_argument(rest, "/image PATH"))))
            elif name == "/test-image":
                parts = rest.split()
                if len(parts) != 2:
                    raise CliError(
                        "Usage: /test-image COLOR WIDTHxHEIGHT, e.g. /test-image red 64x64"
                    )
                self.attach(lambda: solid_image(parts[0], parts[1]))
            elif name == "/model":
                self.switch(_argument(rest, "/model NAME"))
            elif name == "/save":
                self.save(Path(os.path.expanduser(_argument(rest, "/save FILE"))))
            else:
                self.problem(
                    f"Unknown command {name}; /help lists the commands. To send a message that "
                    f"begins with /, write it with //, e.g. /{line}."
                )
        except KeyboardInterrupt:
            leave_if_terminated()
            self.problem(f"{name} interrupted; the conversation is kept.")
        except Exception as exc:  # every failure of a command keeps the session
            self.problem(_failure(exc))
        return True

    def attach(self, make: Any) -> None:
        """Attach an image to the next message, if the model has vision."""
        if not self.info.vision:
            raise CliError(
                f"{self.info.key} does not accept images (LM Studio reports no vision support); "
                "nothing was attached. Switch with /model to a vision model "
                "(`outlines-lmstudio models --capability vision`)."
            )
        attachment: Attachment = make()
        self.pending.append(attachment)
        self.note(f"Attached {attachment.describe()}; it goes with your next message.")

    def switch(self, key: str) -> None:
        """Switch to another model, keeping the conversation."""
        info = resolve_llm(self.session, key)
        self.model = self._model(info)
        self.info = info
        self.note(f"Now chatting with {info.shown} (vision: {'yes' if info.vision else 'no'}).")
        if not info.vision:
            if self.pending:
                self.note(
                    f"Dropped {len(self.pending)} attached image(s): this model has no vision."
                )
                self.pending.clear()
            if any(t.images for t in self.history):
                self.note("Earlier images stay in the history but are not sent to this model.")

    def save(self, path: Path) -> None:
        """Write the conversation to ``path`` as JSON.

        A regular file (or the one a link points to) is replaced whole, through a temporary
        file and a rename; a FIFO, terminal or device is written into, never replaced.
        """
        messages = [Turn("system", self.system).record()] if self.system else []
        messages += [t.record() for t in self.history]
        data = {
            "model": self.info.key,
            "identifier": self.info.identifier,
            "host": self.session.host,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "options": self.kwargs,
            "messages": messages,
        }
        # json_text: a reply's lone surrogate (shown as its escape) is saved as its escape,
        # which reads back to the same text (found by a review: "unexpected UnicodeEncodeError").
        text = json_text(data, indent=2) + "\n"
        target = _save_target(path)
        if target is None:  # a FIFO, a terminal, /dev/null...: written into, never replaced
            _write_into(path, text)
        else:
            _replace(target, text, path)
        count = len(messages)
        self.note(f"Saved {count} message{'s' * (count != 1)} to {path}.")

    # -- replies -------------------------------------------------------------------
    def chat_input(self) -> Any:
        """Return the conversation as an Outlines ``Chat``."""
        from outlines.inputs import Chat

        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        for turn in self.history:
            if turn.images and self.info.vision:
                messages.append(
                    {"role": turn.role, "content": [turn.text, *(a.image for a in turn.images)]}
                )
            else:
                messages.append({"role": turn.role, "content": turn.text})
        return Chat(messages)

    def _show(self, chunk: Any, reasoning: str, reply: str) -> None:
        """Print one streamed piece: thinking dimmed (or one note when hidden), answer plain."""
        from rich.text import Text

        if chunk.reasoning:
            if self.show_reasoning:
                self.out.print(Text(for_terminal(chunk.text), style="dim"), end="", soft_wrap=True)
            elif not reasoning:
                self.out.print(Text("(thinking...) ", style="dim"), end="")
            return
        if reasoning and not reply and self.show_reasoning:
            write_out("\n")  # the answer starts on its own line, after the thinking
        write_out(chunk.text)

    def send(self, text: str) -> None:
        """Send a user message and stream the reply; Ctrl-C stops the reply."""
        from rich.text import Text

        turn = Turn("user", text, self.pending)
        reply, reasoning, stopped, failure = "", "", False, None
        stream: Any = None
        try:  # from the turn on (found by a probe: a Ctrl-C during the header ended the chat)
            self.pending = []
            self.history.append(turn)
            shown = escape_controls(self.info.shown)  # a server's identifier (a review)
            self.out.print(Text(f"{shown}> ", style="bold cyan"), end="")
            stream = self.model.reply_stream(self.chat_input(), **self.kwargs)
            for chunk in stream:
                # Kept before it is shown: a Ctrl-C between the two would otherwise leave a
                # piece on the screen that the history (what is sent next) lacks.
                before = reasoning, reply
                if chunk.reasoning:
                    reasoning += chunk.text
                else:
                    reply += chunk.text
                self._show(chunk, *before)
        except KeyboardInterrupt:
            stopped = True
        except Exception as exc:  # the reply failed; the session goes on
            failure = exc
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # cancels the prediction on the server if it is still running
        write_out("\n")
        if stopped:
            leave_if_terminated()
        if failure is not None:
            self._take_back(turn)
            said = f"{_failure(failure)} (the message was not added to the history"
            if _CONTEXT_FULL.search(str(failure)):  # found by a probe: each later one failed
                said += "; /clear starts the conversation over"
            self.problem(said + ")")
            self._drop_refused_images()
            return
        if stopped:
            self.note("[reply stopped]")
            if not reply:  # found by a probe: after thinking only, dropped without a word
                self.note("(no answer had begun: the message was not added to the history)")
                self._take_back(turn)
                return
        cut_off = None
        if not stopped and stream is not None:  # the finished answer, as generate() gives it
            reply, reasoning = stream.reply.text, stream.reply.reasoning
            cut_off = stream.reply.stats.stop_reason
            if cut_off in _CUT_OFF:  # found by a probe: shown and saved as a whole reply
                self.note(f"[reply cut off: {_CUT_OFF[cut_off]}]")
            else:
                cut_off = None
        self.history.append(
            Turn(
                "assistant",
                reply,
                model=self.info.key,
                stopped=stopped,
                reasoning=reasoning,
                cut_off=cut_off,
            )
        )

    def _take_back(self, turn: Turn) -> None:
        """Take a user turn that got no reply out of the history (if it went in)."""
        if self.history and self.history[-1] is turn:
            self.history.pop()
        self.pending = turn.images

    def _drop_refused_images(self) -> None:
        """Detach the images the library refuses, after a failed send.

        `load_image` runs the library's checks when an image is attached, so this is for
        a refusal it does not foresee; re-attached, such an image failed every later
        message until /clear. The others go with the next message, as before. Each check
        is the library's own (cached for an image it already encoded).
        """
        from outlines_lmstudio._images import normalise_image
        from outlines_lmstudio.errors import InvalidImageError

        kept: list[Attachment] = []
        for attachment in self.pending:
            try:
                normalise_image(attachment.image)
            except InvalidImageError:
                self.note(
                    f"Detached {attachment.source}: it cannot be sent. Convert it to an 8-bit "
                    "PNG and attach that file."
                )
            else:
                kept.append(attachment)
        self.pending = kept


def _cannot_save(path: Path, reason: str) -> CliError:
    return CliError(f"Cannot save to {str(path)!r}: {reason}; the conversation is kept.")


def _save_target(path: Path) -> Path | None:
    """Return the regular file ``/save`` replaces (a link's target), ``None`` for a stream.

    Raises
    ------
    CliError
        If ``path`` is a directory, a link to nothing, or cannot be looked at.
    """
    if "\x00" in str(path):  # the OS takes no such name: Python's ValueError, not an OSError
        raise _cannot_save(path, "a file name cannot hold a NUL character")
    try:
        directory = path.is_dir()  # an OSError on Python 3.11 for a name over 255 bytes
    except OSError as exc:  # found by a probe: "File name too long." without the rest
        raise _cannot_save(path, str(exc.strerror or exc)) from None
    if directory or not path.name:
        raise CliError(
            f"Cannot save to {str(path)!r}: it is a directory; give a file name, "
            f"e.g. /save {path / 'chat.json'}"
        )
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():  # never create a file at the end of a link
            raise _cannot_save(
                path,
                f"it is a symbolic link to {os.readlink(path)!r}, which does not exist "
                "(give the target's path, or remove the link)",
            ) from None
        return path
    except OSError as exc:
        raise _cannot_save(path, str(exc.strerror or exc)) from None
    if not stat.S_ISREG(info.st_mode):
        return None
    return Path(os.path.realpath(path))  # the link stays; the file it points to is replaced


def _write_into(path: Path, text: str) -> None:
    """Write ``text`` into an existing file that is not a regular one (no rename)."""
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise _cannot_save(path, str(exc.strerror or exc)) from None


def _replace(target: Path, text: str, path: Path) -> None:
    """Write ``text`` to a temporary file next to ``target`` and rename it over ``target``.

    ``path`` is the name the user gave, for the message.
    """
    # A new name each time, created exclusively: a temporary file left by a crash (or
    # planted as a symbolic link) is neither reused nor in the way.
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    created = False
    try:
        try:  # a file replaced keeps its permissions (a private chat stays private)
            mode: int | None = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = None
        with open(tmp, "x", encoding="utf-8") as handle:
            created = True
            if mode is not None:
                set_mode(handle.fileno(), tmp, mode)
            handle.write(text)
        os.replace(tmp, target)
    except BaseException as exc:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        reason = str(exc.strerror or exc)
        if not created and exc.filename == str(tmp):  # not the file's fault: its folder's
            folder = str(target.parent)
            if not target.parent.is_dir():
                reason = f"the folder {folder!r} does not exist"
            elif exc.errno == errno.ENAMETOOLONG:  # found by a review: "no file can be made"
                extra = len(tmp.name) - len(target.name)
                reason = (
                    f"the name is too long: /save first writes a file whose name is {extra} "
                    "characters longer, then renames it; give a shorter name"
                )
            else:
                reason = (
                    f"no file can be made in {folder!r} ({reason}): /save writes a new file "
                    "there, then renames it to the name given (over any file of that name)"
                )
        raise _cannot_save(path, reason) from None


_CONTEXT_FULL = re.compile(
    r"context length of \d|context size|context (?:the )?overflows?|reached context length", re.I
)
"""How LM Studio's engines say a prompt does not fit the context (llama.cpp, MLX, LM Studio's
overflow policy); not the library's hint about a failed prediction, which names "its context
length" whatever failed (found by a review)."""

_CLEAR = "; /clear starts the conversation over"
_CUT_OFF = {**CUT_OFF, "contextLengthReached": CUT_OFF["contextLengthReached"] + _CLEAR}
"""The stop reasons of a reply a limit cut off, as the chat says them."""


_HELP_BESIDE = 50
"""The narrowest terminal on which /help puts each description beside its command."""


def _failure(exc: Exception) -> str:
    """One line for a failure inside the chat (a bug of ours is named as such)."""
    report = failure_report(exc, "Send your message again")
    if report is not None:
        return report[0]
    return f"unexpected {type(exc).__name__}: {error_message(exc)} (a bug: please report it)"


def _argument(rest: str, usage: str) -> str:
    if not rest:
        raise CliError(f"Usage: {usage}")
    if rest[0] in "'\"":
        try:
            parts = shlex.split(rest)
        except ValueError as exc:
            raise CliError(f"Usage: {usage} ({exc})") from None
        if len(parts) == 1:
            if not parts[0]:  # /save "": it would be ".", the current directory
                raise CliError(f"Usage: {usage} (it is empty)")
            return parts[0]
    return rest


def run(args: argparse.Namespace) -> int:
    """Run the chat; return the exit status."""
    kwargs = sampling_kwargs(args)
    check_options_text(args)
    stdin_lines_tolerant()
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):  # no readline on Windows
            import readline  # noqa: F401  (line editing and history for input())
    with connect(args) as session:
        info = resolve_llm(session, args.model)
        show = not args.hide_reasoning
        ChatSession(session, info, args.system, kwargs, console(), show_reasoning=show).loop()
    return 0
