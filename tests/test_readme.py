"""The commands in README.md name real things.

Every ``kedro run``, ``make`` and ``python -m facescan...`` command found in the README's code (fenced
and indented code blocks, and inline code spans) is checked against the project, not run:

* ``kedro run``: every option is one of ``kedro run``'s; ``--pipeline(s)`` names registered
  pipelines (with the variant namespaces of the chosen ``--env`` and ``--params``); ``--env`` names a
  folder of conf/; every ``--params`` key exists in the merged parameters of that environment
  (``base`` + the environment); ``--namespaces``, ``--nodes``, ``--from-nodes``, ``--to-nodes`` and
  ``--tags`` name namespaces, nodes and tags of the selected pipelines;
* ``make``: every target is a Makefile target;
* ``python -m facescan...`` (also under ``torchrun -m``): the module runs as a program, and when it
  has ``build_parser()`` its arguments parse and its ``--env``, ``--params`` and ``--variant`` are
  checked like ``kedro run``'s.

Placeholders (``<variant>``, ``...``) are skipped. Keys under :data:`USER_KEYS` are names the user
chooses (a new variant, a class folder name). Fast: nothing trains, nothing runs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import io
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from facescan.training.__main__ import split_params

REPO = Path(__file__).resolve().parents[1]
#: The documents whose commands are checked.
DOCUMENTS = ("README.md",)
#: ``--params`` keys below these are the user's own names (documented: a variant key under
#: ``ablation.custom_variants``, a folder or label name under ``*.source.classes``).
USER_KEYS = ("ablation.custom_variants.", "data.source.classes.", "external.source.classes.")
_PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|\{[^}]*\}")
_COMMAND = re.compile(r"(^|[\s;&|(])(\S*/)?(kedro\s+run|make)\b|-m\s+facescan\b")
_SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class Command:
    """A command line found in a document."""

    where: str  # "README.md:42"
    text: str
    inline: bool  # from an inline code span in prose (may be shorthand: a trailing option)


def _code_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """``(line number, code, inline)``: code-block lines (continuations joined) and inline spans."""
    lines = text.splitlines()
    fence: str | None = None
    previous_blank = True
    in_indented = False
    pending, pending_no = "", 0
    for no, line in enumerate(lines, start=1):
        stripped = line.strip()
        if fence is None and re.match(r"^\s{0,3}(```|~~~)", line):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
                continue
            code = line
        elif line.startswith(("    ", "\t")) and (previous_blank or in_indented) and stripped:
            in_indented = True
            code = line
        else:
            in_indented = False
            previous_blank = not stripped
            if stripped:
                for match in re.finditer(r"(`+)(.+?)\1", line):
                    yield no, match.group(2).strip(), True
            continue
        previous_blank = False
        # A shell line continuation: join with the next line.
        if code.rstrip().endswith("\\"):
            pending_no = pending_no or no
            pending += code.rstrip()[:-1] + " "
            continue
        yield (pending_no or no), (pending + code).strip(), False
        pending, pending_no = "", 0


def find_commands(document: str) -> list[Command]:
    """Every command line of ``document`` (relative to the repository) that this test checks."""
    text = (REPO / document).read_text(encoding="utf-8")
    return [
        Command(f"{document}:{no}", code, inline)
        for no, code, inline in _code_lines(text)
        if _COMMAND.search(code)
    ]


COMMANDS = [c for doc in DOCUMENTS for c in find_commands(doc)]


def _split_commands(text: str) -> list[list[str]]:
    """Shell words of each simple command (``a && b ; c | d``), comments and ``$`` prompts gone."""
    text = re.sub(r"^\$\s+", "", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def _is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.search(value))


# --- the project, as the commands would see it ---------------------------------------------------


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parameter_files(folder: Path) -> list[Path]:
    """Kedro's default ``parameters`` patterns: parameters*, parameters*/**, **/parameters*."""
    files = {
        p
        for pattern in ("parameters*", "parameters*/**/*", "**/parameters*")
        for p in folder.glob(pattern)
        if p.is_file() and p.suffix in (".yml", ".yaml")
    }
    return sorted(files)


@functools.cache
def environment_parameters(env: str | None) -> dict[str, Any]:
    """``base`` + ``env`` parameters, soft-merged as the project's settings say."""
    params: dict[str, Any] = {}
    for folder in ["base"] + ([env] if env and env != "base" else []):
        for path in _parameter_files(REPO / "conf" / folder):
            params = _deep_merge(params, yaml.safe_load(path.read_text()) or {})
    return params


def _runtime_params(values: list[str]) -> dict[str, Any]:
    """``--params`` values as the nested dict Kedro builds from them."""
    nested: dict[str, Any] = {}
    for value in values:
        for item in split_params(value):
            key, _, raw = item.partition("=")
            *parents, leaf = key.strip().split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    break
            else:
                try:
                    node[leaf] = yaml.safe_load(raw) if raw.strip() else None
                except yaml.YAMLError:
                    node[leaf] = raw
    return nested


def check_params(values: list[str], env: str | None) -> list[str]:
    """Problems with ``--params`` values: malformed pairs, keys that no parameter file defines."""
    problems = []
    merged = environment_parameters(env)
    for value in values:
        for item in split_params(value):
            key, sep, _ = item.partition("=")
            key = key.strip()
            if not sep or not key:
                problems.append(f"--params {item!r} is not key=value")
                continue
            if _is_placeholder(key) or any(key.startswith(p) for p in USER_KEYS):
                continue
            node: Any = merged
            for depth, part in enumerate(key.split(".")):
                if not isinstance(node, Mapping) or part not in node:
                    known = sorted(node) if isinstance(node, Mapping) else []
                    where = ".".join(key.split(".")[:depth]) or "the parameters"
                    problems.append(
                        f"--params {key}: no such parameter in conf/base"
                        + (f" + conf/{env}" if env else "")
                        + f" ({where} has {known})"
                    )
                    break
                node = node[part]
    return problems


@functools.cache
def _registry(ablation_json: str) -> dict[str, Any]:
    from facescan import pipeline_registry

    saved = pipeline_registry._ABLATION
    try:
        pipeline_registry.use_ablation(json.loads(ablation_json))
        return pipeline_registry.register_pipelines()
    finally:
        pipeline_registry.use_ablation(saved)


def registered_pipelines(env: str | None, runtime: Mapping[str, Any]) -> dict[str, Any]:
    """The pipelines ``kedro run --env env --params ...`` would register (variant namespaces
    follow ``ablation``)."""
    ablation = _deep_merge(environment_parameters(env), runtime).get("ablation") or {}
    return _registry(json.dumps(ablation, sort_keys=True, default=str))


@functools.lru_cache(maxsize=1)
def make_targets() -> frozenset[str]:
    """Explicit targets of the Makefile (not pattern or variable targets)."""
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+(?:\s+[A-Za-z0-9_.\-]+)*)\s*:(?!=)", line)
        if match:
            targets.update(t for t in match.group(1).split() if not t.startswith("."))
    return frozenset(targets)


@functools.lru_cache(maxsize=1)
def kedro_run_options() -> dict[str, bool]:
    """Every option of ``kedro run`` -> whether it takes a value."""
    from kedro.framework.cli.project import run

    options = {}
    for param in run.params:
        for opt in [*param.opts, *param.secondary_opts]:
            options[opt] = not getattr(param, "is_flag", False)
    return options


def _parse_options(
    words: list[str], takes_value: Mapping[str, bool], inline: bool
) -> tuple[dict[str, list[str]], list[str]]:
    """``--opt value`` / ``--opt=value`` words -> values per option, and the problems found."""
    values: dict[str, list[str]] = {}
    problems = []
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, attached = word.partition("=")
        if not word.startswith("-"):
            problems.append(f"unexpected argument {word!r}")
        elif name not in takes_value:
            problems.append(f"{name} is not an option of this command")
        elif not takes_value[name]:
            values.setdefault(name, []).append("")
        elif eq:
            values.setdefault(name, []).append(attached)
        elif i + 1 < len(words):
            values.setdefault(name, []).append(words[i + 1])
            i += 1
        elif not inline:  # prose may write `kedro run ... --namespaces` as shorthand
            problems.append(f"{name} has no value")
        i += 1
    return values, problems


def _names(values: list[str]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def check_kedro_run(words: list[str], inline: bool) -> list[str]:
    options = kedro_run_options()
    values, problems = _parse_options(words, options, inline)
    alias = {"-e": "--env", "-p": "--pipeline", "-ns": "--namespaces", "-n": "--nodes"}
    alias |= {"-t": "--tags"}
    for short, long in alias.items():
        if short in values:
            values.setdefault(long, []).extend(values.pop(short))

    envs = [e for e in values.get("--env", []) if not _is_placeholder(e)]
    env = envs[-1] if envs else None
    if env is not None and not (REPO / "conf" / env).is_dir():
        folders = sorted(p.name for p in (REPO / "conf").iterdir() if p.is_dir())
        problems.append(f"--env {env}: no folder conf/{env} (environments: {folders})")
        env = None
    params = [p for p in values.get("--params", [])]
    problems += check_params(params, env)

    runtime = _runtime_params([p for p in params if not _is_placeholder(p)])
    registry = registered_pipelines(env, runtime)
    names = _names(values.get("--pipelines", []) + values.get("--pipeline", [])) or ["__default__"]
    selected = []
    for name in names:
        if _is_placeholder(name):
            continue
        if name not in registry:
            problems.append(f"--pipelines {name}: not a registered pipeline ({sorted(registry)})")
        else:
            selected.append(registry[name])
    if not selected:
        return problems
    nodes = [n for p in selected for n in p.nodes]
    namespaces = {n.namespace.split(".")[0] for n in nodes if n.namespace}
    node_names = {n.name for n in nodes}
    tags = {t for n in nodes for t in n.tags}
    for option, known, what in (
        ("--namespaces", namespaces, "namespace"),
        ("--nodes", node_names, "node"),
        ("--from-nodes", node_names, "node"),
        ("--to-nodes", node_names, "node"),
        ("--tags", tags, "tag"),
    ):
        for name in _names(values.get(option, [])):
            if not _is_placeholder(name) and name not in known:
                problems.append(
                    f"{option} {name}: no such {what} in the selected pipelines "
                    f"({sorted(known)[:20]})"
                )
    return problems


def check_make(words: list[str]) -> list[str]:
    problems = []
    for word in words:
        if word.startswith("-") or "=" in word or _is_placeholder(word):
            continue
        if word not in make_targets():
            problems.append(f"make {word}: no such Makefile target ({sorted(make_targets())})")
    return problems


def check_module(module: str, args: list[str]) -> list[str]:
    """``python -m module args``: the module is runnable; its parser, if any, accepts ``args``."""
    if _is_placeholder(module):
        return []
    try:
        spec = importlib.util.find_spec(module)
        main = (
            importlib.util.find_spec(module + ".__main__")
            if spec is not None and spec.submodule_search_locations
            else spec
        )
    except ModuleNotFoundError:
        spec = main = None
    if main is None:
        return [f"python -m {module}: no such runnable module"]
    program = importlib.import_module(main.name)
    if not hasattr(program, "build_parser") or any(_is_placeholder(a) for a in args):
        return []
    if {"-h", "--help"} & set(args):
        return []
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            parsed = program.build_parser().parse_args(args)
    except SystemExit:
        why = err.getvalue().strip().splitlines()[-1:]
        return [f"python -m {module} {' '.join(args)}: {' '.join(why) or 'refused'}"]
    problems = []
    env = getattr(parsed, "env", None)
    if env is not None and not (REPO / "conf" / env).is_dir():
        problems.append(f"--env {env}: no folder conf/{env}")
        env = None
    problems += check_params(list(getattr(parsed, "params", None) or []), env)
    variant = getattr(parsed, "variant", None)
    if variant is not None:
        from facescan.models import list_variants

        custom = (environment_parameters(env).get("ablation") or {}).get("custom_variants") or {}
        if variant not in set(list_variants()) | set(custom):
            problems.append(f"--variant {variant}: not a built-in or custom variant")
    return problems


def check_command(command: Command) -> list[str]:
    """Every problem of one command line (empty when it names only real things)."""
    try:
        simple_commands = _split_commands(command.text)
    except ValueError as err:  # unbalanced quotes
        return [f"cannot parse {command.text!r}: {err}"]
    problems = []
    for words in simple_commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
            words = words[1:]  # VAR=value before the command
        if not words:
            continue
        program = Path(words[0]).name
        if program == "kedro" and words[1:2] == ["run"]:
            problems += check_kedro_run(words[2:], command.inline)
        elif program == "make":
            problems += check_make(words[1:])
        elif "-m" in words and words.index("-m") + 1 < len(words):
            i = words.index("-m")
            if words[i + 1].startswith("facescan"):
                problems += check_module(words[i + 1], words[i + 2 :])
    return problems


# --- the tests -----------------------------------------------------------------------------------


def test_the_readme_has_commands_to_check() -> None:
    texts = [c.text for c in COMMANDS]
    assert any("kedro run" in t for t in texts) and any(
        re.search(r"(^|\s)make\s", t) for t in texts
    ), f"no kedro run or make command found in {DOCUMENTS}: has the README's format changed?"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_readme_command_names_real_things(command: Command) -> None:
    problems = check_command(command)
    assert not problems, f"{command.where}: {command.text}\n  " + "\n  ".join(problems)


# --- the checker itself: it must catch what it claims to catch ------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kedro run --pipelines ablation,nope", "--pipelines nope: not a registered pipeline"),
        ("kedro run --pipeline=trainingg", "--pipelines trainingg"),
        ("kedro run --env gpu", "--env gpu: no folder conf/gpu"),
        ("kedro run --params data.source.kind=folder", "--params data.source.kind: no such"),
        ("kedro run --params training.max_epochs=1,training.epochs=2", "training.epochs"),
        ("kedro run --pipelines training --namespaces resnet5", "--namespaces resnet5: no such"),
        ("kedro run --pipelines predict --nodes nope", "--nodes nope: no such node"),
        ("kedro run --tags nope", "--tags nope: no such tag"),
        ("kedro run --pipelinez ablation", "--pipelinez is not an option"),
        ("kedro run --env paper --params training.distributed.nprocs=4", "nprocs"),
        ("make ablations", "make ablations: no such Makefile target"),
        ("python -m facescan.nope", "python -m facescan.nope: no such runnable module"),
        ("python -m facescan.training --variant vit --nodes 2", "unrecognized arguments"),
        ("torchrun -m facescan.training --variant vitt --env paper", "--variant vitt: not a"),
        ("python -m facescan.training --variant vit --params training.epochs=1", "epochs"),
        ("cd x && .venv/bin/kedro run --pipelines nope", "--pipelines nope"),
    ],
)
def test_the_checker_catches_wrong_commands(text: str, problem: str) -> None:
    problems = check_command(Command("example", text, inline=False))
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "text",
    [
        "kedro run --pipelines ablation --env paper --params data.source.type=folder,"
        "data.source.path=/data/faces",
        "CUDA_VISIBLE_DEVICES=0,1 kedro run --env paper --pipelines training --namespaces "
        "resnet50,aspp_crossscan_vit  # two GPUs",
        "kedro run --pipelines predict --namespaces <variant> --params predict.input_path=...",
        "kedro run --pipelines training --params 'ablation.custom_variants.mine={base: aspp_vit},"
        "ablation.variants=[mine]'",
        "kedro run --pipelines ingestion --params data.source.classes.AI=1",
        "make PYTHON=/usr/bin/python3.11 test PYTEST_ARGS=-x",
        "kedro run -p data -e test",
        "torchrun --nnodes 2 --nproc-per-node 8 -m facescan.training --variant aspp_crossscan_vit "
        "--env paper --params training.max_epochs=3",
        "python -m facescan.training --help",
    ],
)
def test_the_checker_accepts_right_commands(text: str) -> None:
    assert check_command(Command("example", text, inline=False)) == []


def test_code_is_found_in_fences_indented_blocks_and_inline_spans() -> None:
    text = (
        "Intro `kedro run --pipelines a` here.\n\n"
        "```bash\nmake b\nkedro run \\\n  --pipelines c\n```\n\n"
        "    kedro run --pipelines d   # comment `x`\n"
    )
    found = [(code, inline) for _, code, inline in _code_lines(text)]
    assert ("kedro run --pipelines a", True) in found
    assert ("make b", False) in found
    assert any(c.startswith("kedro run") and "--pipelines c" in c for c, _ in found)
    assert ("kedro run --pipelines d   # comment `x`", False) in found
