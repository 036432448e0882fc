"""``models``: capabilities as LM Studio reports them, filters, sorting, paging, JSON."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from outlines_lmstudio.testing import EmulatedModel, Fault, LMStudioEmulator

from .conftest import MainInProcess, RunCli
from .helpers import EMBED, MLX, TEXT, UNLOADED, VISION, assert_one_line_error, cli_env, script_path

pytestmark = pytest.mark.timeout(30)


_WIDTHS = {
    "Model key": 36,
    "Type": 9,
    "Format": 6,
    "Params": 6,
    "Context": 7,
    "Size": 8,
    "Capabilities": 12,
    "Loaded": 6,
}
"""The natural widths of the columns for the emulator's catalogue."""


def models_json(run_cli: RunCli, *args: str) -> list[dict[str, Any]]:
    result = run_cli("models", "--json", *args)
    assert result.returncode == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def test_table_shows_every_model_with_capabilities(run_cli: RunCli) -> None:
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert set(rows) >= {TEXT, VISION, MLX, EMBED, UNLOADED}
    assert "chat, vision" in rows[VISION]
    assert "GGUF" in rows[VISION]
    assert "chat, tools" in rows[TEXT]
    assert "32,768" in rows[TEXT]
    assert "4.7 GB" in rows[TEXT]
    assert "MLX" in rows[MLX]
    assert "embedding" in rows[EMBED]
    assert rows[UNLOADED].rstrip().endswith("no")
    assert rows[TEXT].rstrip().endswith("yes")


def test_json_fields(run_cli: RunCli) -> None:
    by_key = {m["key"]: m for m in models_json(run_cli)}
    assert by_key[VISION]["vision"] is True
    assert by_key[VISION]["capabilities"] == ["chat", "vision"]
    assert by_key[TEXT]["tool_use"] is True
    assert by_key[TEXT]["max_context_length"] == 32768
    assert by_key[MLX]["format"] == "safetensors"
    assert by_key[MLX]["engine"] == "MLX"
    assert by_key[EMBED]["type"] == "embedding"
    assert by_key[EMBED]["capabilities"] == ["embedding"]
    assert by_key[UNLOADED]["loaded"] is False
    assert by_key[UNLOADED]["loaded_as"] == []
    assert by_key[TEXT]["loaded_as"] == [TEXT]


def test_capabilities_come_from_lm_studio_not_from_names() -> None:
    models = [
        EmulatedModel("llava-vision-in-name-only"),
        EmulatedModel("plain-name", vision=True, tool_use=True, format="safetensors"),
        EmulatedModel("embed-sounding-llm", size_bytes=10),
    ]
    with LMStudioEmulator(models) as custom:
        result = subprocess.run(
            [
                *script_path(),
                "--host",
                custom.api_host,
                "models",
                "--json",
                "--capability",
                "vision",
            ],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=20,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert [m["key"] for m in shown] == ["plain-name"]
    assert shown[0]["capabilities"] == ["chat", "vision", "tools"]


def _select(emulator: LMStudioEmulator, *argv: str) -> list[str]:
    """Run the filter/sort/page step in-process on what the emulator reports."""
    import argparse

    import lmstudio as lms

    from outlines_lmstudio.cli import _models

    parser = argparse.ArgumentParser()
    _models.add_arguments(parser)
    with lms.Client(emulator.api_host) as client:
        rows = _models.collect(client)
    shown, _ = _models.select(rows, parser.parse_args(list(argv)))
    return [row.key for row in shown]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--capability", "vision"], [VISION]),
        (["--capability", "tools"], [TEXT]),
        (["--capability", "embedding"], [EMBED]),
        (["--capability", "chat"], [UNLOADED, MLX, VISION, TEXT]),
        (["--capability", "chat", "--capability", "vision"], [VISION]),
        (["--capability", "embedding", "--capability", "chat"], []),
        (["--loaded", "--capability", "chat"], [MLX, VISION, TEXT]),
        (["--sort", "size", "--reverse"], [TEXT, VISION, UNLOADED, MLX, EMBED]),
        (["--sort", "size"], [EMBED, MLX, UNLOADED, VISION, TEXT]),
        (["--sort", "type"], [UNLOADED, MLX, VISION, TEXT, EMBED]),
        (["--sort", "capabilities"], [TEXT, VISION, UNLOADED, MLX, EMBED]),
        (["--sort", "name", "--reverse"], [EMBED, TEXT, VISION, MLX, UNLOADED]),
        (["--page", "3", "--page-size", "2"], [EMBED]),
        (["--page", "1"], [UNLOADED, MLX, VISION, TEXT, EMBED]),
    ],
)
def test_filter_sort_page(emulator: LMStudioEmulator, argv: list[str], expected: list[str]) -> None:
    assert _select(emulator, *argv) == expected


def test_paging(main_in_process: MainInProcess) -> None:
    table = main_in_process("models", "--page", "1", "--page-size", "2")
    assert table.returncode == 0
    assert (
        "Page 1 of 3 (5 models); --page 2 for more" in table.stderr
    )  # not a terminal: data on stdout, notes on stderr
    beyond = main_in_process("models", "--page", "4", "--page-size", "2")
    assert beyond.returncode == 2
    assert beyond.stdout == ""
    assert_one_line_error(beyond, "--page 4 is out of range", "3 page(s) of 2")


def test_the_last_page_offers_no_next_page(main_in_process: MainInProcess) -> None:
    """Found by mutation testing: nothing checked that the last page's footer offers no
    next page ("--page 4 for more" on page 3 of 3 sent the user to an error)."""
    last = main_in_process("models", "--page", "3", "--page-size", "2")
    assert last.returncode == 0, last.stderr
    assert "Page 3 of 3 (5 models)" in last.stderr
    assert "for more" not in last.stderr
    assert [line.split("\t")[0] for line in last.stdout.splitlines()] == [EMBED]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--page", "0"], "--page must be at least 1, got 0"),
        (["--page", "-1"], "--page must be at least 1, got -1"),
        (["--page-size", "0"], "--page-size must be at least 1, got 0"),
    ],
)
def test_paging_options_are_checked_before_connecting(
    run_cli: RunCli, closed_port: int, argv: list[str], needle: str
) -> None:
    """Found by a probe: with LM Studio down, "not reachable" (status 3)."""
    result = run_cli("--host", f"127.0.0.1:{closed_port}", "models", *argv, host=False)
    assert result.returncode == 2
    assert_one_line_error(result, needle)


# -- issue 15: output made for pipes; keys never wrapped -----------------------------------

ALL_KEYS = {TEXT, VISION, MLX, EMBED, UNLOADED}


@pytest.mark.parametrize("columns", ["40", "80", "200"])
def test_piped_output_is_one_model_per_line(
    run_cli: RunCli, emulator: LMStudioEmulator, columns: str
) -> None:
    result = run_cli("models", env=cli_env(COLUMNS=columns))
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert {row[0] for row in rows} == ALL_KEYS  # nothing else on stdout: no title, no rules
    assert all(len(row) == 8 for row in rows)
    by_key = {row[0]: row for row in rows}
    assert by_key[VISION][6] == "chat, vision"
    assert by_key[UNLOADED][7] == "no"
    # what `outlines-lmstudio models | grep KEY` relies on
    assert [line for line in result.stdout.splitlines() if UNLOADED in line]


def test_piped_notes_go_to_stderr(run_cli: RunCli) -> None:
    paged = run_cli("models", "--page", "1", "--page-size", "2", env=cli_env(COLUMNS="40"))
    assert len(paged.stdout.splitlines()) == 2
    assert "Page 1 of 3" in paged.stderr
    none = run_cli("models", "--capability", "vision", "--capability", "embedding")
    assert none.stdout == ""
    assert "no models match" in none.stderr


@pytest.mark.parametrize(
    ("available", "kept"),
    [
        (200, list(_WIDTHS)),
        (80, ["Model key", "Context", "Size", "Capabilities", "Loaded"]),
        (60, ["Model key", "Capabilities", "Loaded"]),
        (30, ["Model key", "Capabilities", "Loaded"]),  # then a list, not a table
    ],
)
def test_columns_left_out_to_fit_a_terminal(available: int, kept: list[str]) -> None:
    from outlines_lmstudio.cli._models import fit_columns

    assert fit_columns(_WIDTHS, available) == kept


def test_json_is_unchanged_at_any_width(run_cli: RunCli) -> None:
    narrow = run_cli("models", "--json", env=cli_env(COLUMNS="40"))
    wide = run_cli("models", "--json", env=cli_env(COLUMNS="200"))
    assert narrow.stdout == wide.stdout
    assert {m["key"] for m in json.loads(narrow.stdout)} == ALL_KEYS


@pytest.mark.parametrize("columns", [40, 80])
def test_terminal_table_never_wraps_keys(
    emulator: LMStudioEmulator, columns: int, run_cli: RunCli
) -> None:
    env = cli_env()
    env.pop("COLUMNS")
    screen, _ = _models_on_a_terminal(emulator, env, columns)
    assert "Models on" in screen  # the terminal's form, not the piped one
    for key in ALL_KEYS:
        assert any(line.lstrip().startswith(key) for line in screen.splitlines()), (key, screen)
    # At 80 columns (and even 40) every model still shows its capabilities and whether it is
    # loaded: they were the columns rich dropped to fit, and the command is for them.
    piped = run_cli("models").stdout.splitlines()
    for row in (line.split("\t") for line in piped):
        key, capabilities, loaded = row[0], row[6], row[7]
        on_screen = screen.splitlines()
        at = next(i for i, line in enumerate(on_screen) if line.lstrip().startswith(key))
        shown = on_screen[at]  # the table's row
        if shown.strip() == key:  # the list: key, then capabilities and loaded
            shown = on_screen[at + 1]
        assert capabilities in shown, (key, screen)
        assert loaded in shown, (key, screen)
    assert "Left out to fit the terminal:" in screen


def _models_on_a_terminal(
    emulator: LMStudioEmulator, env: dict[str, str], columns: int
) -> tuple[str, int | None]:
    """Run ``models`` in a pseudo-terminal ``columns`` wide: (what it showed, exit status)."""
    import pexpect

    command = script_path()
    child = pexpect.spawn(
        command[0],
        [*command[1:], "--host", emulator.api_host, "models"],
        env=env,
        encoding="utf-8",
        timeout=15,
        dimensions=(50, columns),
    )
    child.expect(pexpect.EOF)
    child.close()
    return (child.before or "").replace("\r", ""), child.exitstatus


@pytest.mark.parametrize("columns_variable", [True, False])
def test_a_dumb_terminal_is_as_wide_as_it_is(
    emulator: LMStudioEmulator, columns_variable: bool
) -> None:
    """Rich takes ``TERM=dumb`` (Emacs' shell, some CI runners) as 80 columns: a 160-column
    terminal lost three columns, ``COLUMNS`` or not (found by a probe)."""
    env = cli_env(TERM="dumb", COLUMNS="160")
    if not columns_variable:
        env.pop("COLUMNS")
    screen, status = _models_on_a_terminal(emulator, env, 160)
    assert status == 0
    assert "Models on" in screen
    assert "Left out" not in screen, screen
    assert all(name in screen for name in _WIDTHS), screen


def test_a_columns_of_zero_still_shows_the_table(emulator: LMStudioEmulator) -> None:
    # COLUMNS=0 made rich's width 0: on a terminal `models` printed nothing and exited 0.
    screen, status = _models_on_a_terminal(emulator, cli_env(COLUMNS="0", TERM="xterm"), 120)
    assert status == 0
    assert "Models on" in screen
    for key in ALL_KEYS:
        assert key in screen, (key, screen)


def test_control_characters_in_names_are_shown_escaped() -> None:
    """A key with an escape sequence acted on the terminal, and a tab or line break in it
    broke the piped form's one tab-separated line per model; --json keeps it as it is."""
    key = "evil\x1b[2J\tkey\nx"
    with LMStudioEmulator([EmulatedModel(key), EmulatedModel("plain")]) as custom:

        def models(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*script_path(), "--host", custom.api_host, "models", *extra],
                capture_output=True,
                text=True,
                env=cli_env(),
                timeout=20,
                check=False,
            )

        piped, as_json = models(), models("--json")
    assert piped.returncode == 0, piped.stderr
    rows = [line.split("\t") for line in piped.stdout.splitlines()]
    assert all(len(row) == 8 for row in rows)
    assert sorted(row[0] for row in rows) == ["evil\\x1b[2J\\tkey\\nx", "plain"]
    assert "\x1b" not in piped.stdout
    assert sorted(m["key"] for m in json.loads(as_json.stdout)) == [key, "plain"]


def test_a_piped_key_with_joiners_or_no_break_spaces_can_be_passed_back(run_cli: RunCli) -> None:
    """Every character ``str.isprintable`` refuses was escaped: the zero-width joiner of an
    emoji sequence, a no-break space; ``models | cut -f1`` then gave a key that ``-m`` did
    not find (found by a probe). Only control characters are escaped."""
    keys = ["team-\U0001f468\u200d\U0001f469\u200d\U0001f467-7b", "nbsp\u00a0model"]
    with LMStudioEmulator([EmulatedModel(key) for key in keys]) as custom:
        piped = run_cli("--host", custom.api_host, "models", host=False)
        assert piped.returncode == 0, piped.stderr
        listed = [line.split("\t")[0] for line in piped.stdout.splitlines()]
        assert sorted(listed) == sorted(keys)
        custom.script(keys[0], ["ok"])
        used = run_cli("--host", custom.api_host, "generate", "-m", listed[0], "hi", host=False)
        assert used.returncode == 0, used.stderr


def test_an_instance_unloaded_while_listing_is_left_out(
    run_cli: RunCli, main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    # Found by a probe: the whole listing failed with "No loaded model satisfies all
    # requirements" when one instance went away between listing and asking about it.
    second = emulator.load(TEXT, f"{TEXT}:2")
    emulator.add_fault(Fault("getModelInfo", "unload", model=VISION))
    emulator.add_fault(Fault("getModelInfo", "unload", model=second))
    by_key = {m["key"]: m for m in models_json(run_cli)}
    assert by_key[VISION]["loaded"] is False  # its only instance: downloaded, not loaded
    assert by_key[VISION]["loaded_as"] == []
    assert by_key[TEXT]["loaded_as"] == [TEXT]  # the other instance of the model stays
    assert set(by_key) >= {TEXT, VISION, MLX, EMBED, UNLOADED}

    emulator.add_fault(Fault("getModelInfo", "error", message="Injected failure", model=MLX))
    failed = main_in_process("models")
    assert failed.returncode == 1
    assert_one_line_error(failed, "Injected failure")


def test_a_model_loaded_twice_lists_its_identifiers_not_yes(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    """Found by mutation testing: nothing checked the Loaded column of a model with a second
    instance. "yes" is only for one instance named by the key; else it lists the identifiers
    (which `-m` takes), as the JSON's "loaded_as" does."""
    emulator.load(TEXT, f"{TEXT}:2")
    result = main_in_process("models")
    assert result.returncode == 0, result.stderr
    by_key = {row[0]: row for row in (line.split("\t") for line in result.stdout.splitlines())}
    assert by_key[TEXT][7] == f"{TEXT}, {TEXT}:2"
    assert by_key[VISION][7] == "yes"  # loaded once, as its key
