"""The README's shell commands, found, classified and checked, for the tests that exercise them.

Every fenced ```bash / ```sh / ```shell / ```console block of README.md is split into commands (``\\`` line
continuations joined, ``#`` comments dropped, ``&&``/``||``/``;``/``|`` chains split, ``VAR=value`` prefixes kept
apart). Each command gets a kind (``KINDS``); a command of no known kind is ``unknown`` and fails
tests/unit/test_readme.py, so a new kind of README command has to be classified here first.

``readme_commands("cluster")`` is the hook for the cluster harness (tests/cluster): the spark-submit commands meant
for the two-node cluster on this machine, with their ``<placeholders>`` for ``ShellCommand.resolve``.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
KINDS = {
    "make": "a make target: it must exist, with its prerequisites (`make -n` resolves them, runs nothing)",
    "visionlake": "the CLI: its arguments parsed and its config loaded as `visionlake` does, without Spark",
    "job": "a jobs/*.py entry point run locally (python, or spark-submit with a local or no master): its arguments "
           "parsed and its config loaded as the job does, its --py-files/--archives/--jars built by make, its --conf "
           "found",
    "cluster": "spark-submit to the two-node cluster on this machine (spark://127.0.0.1:<port>): checked like a job "
               "here; tests/cluster runs these for real through readme_commands('cluster')",
    "remote": "spark-submit to a cluster elsewhere (YARN, Kubernetes, a remote standalone master): checked like a "
              "job, and that the config is one executors on other nodes can use; never run",
    "env": "export VAR=value: sets the environment of the commands after it",
    "copy": "cp SOURCE TARGET: not run (it would write into the checkout); SOURCE must exist, and later commands may "
            "name TARGET",
    "setup": "builds an environment (pip, venv, venv-pack): not run (minutes, PyPI); `make setup` and "
             "`make cluster-env` install the same pinned stack; the files it names must exist",
}
# Programs that only build environments (kind "setup"), and why they are not run here.
SETUP_PROGRAMS = {"pip": "installs packages from PyPI", "venv-pack": "packs a virtualenv into an archive"}
# spark-submit options that take no value; every other option takes one.
_SPARK_SUBMIT_SWITCHES = {"--verbose", "-v", "--supervise", "--help", "-h", "--version", "--kill", "--status"}
_PLACEHOLDER = re.compile(r"<([A-Za-z][\w .-]*?)>")
_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)")


class CommandError(ValueError):
    """A README command that would not run as written."""


@dataclass(frozen=True)
class ShellCommand:
    """One command of a README code block."""
    source: str                        # "README.md:312", where the command starts
    line: int
    text: str                          # as written, continuations joined, comment dropped
    env: tuple[tuple[str, str], ...]   # VAR=value prefix assignments
    argv: tuple[str, ...]              # the words after them; a placeholder "<mlflow port>" is "<mlflow_port>"
    kind: str

    def __str__(self) -> str:
        return f"{self.source} {self.text[:90]}"

    @property
    def placeholders(self) -> set[str]:
        """The ``<name>`` placeholders in the command (``<mlflow port>`` is ``mlflow_port``)."""
        return {name for word in self.argv for name in _PLACEHOLDER.findall(word)}

    def resolve(self, **values: str) -> list[str]:
        """``argv`` with every ``<name>`` replaced by ``values[name]``.

        Raises:
            KeyError: a placeholder has no value; the message names it.
        """
        missing = self.placeholders - set(values)
        if missing:
            raise KeyError(f"{self.source}: give a value for the placeholders {sorted(missing)}")
        return [_PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), word) for word in self.argv]


def readme_commands(kind: Optional[str] = None, path: Path = README) -> list[ShellCommand]:
    """The commands of the README's shell blocks, in order; only those of ``kind`` when given (see ``KINDS``)."""
    if kind is not None and kind not in KINDS and kind != "unknown":
        raise ValueError(f"no command kind {kind!r}; kinds: {', '.join(KINDS)}")
    commands = extract_commands(path.read_text(), path.name)
    return [command for command in commands if kind is None or command.kind == kind]


def extract_commands(markdown: str, name: str = "README.md") -> list[ShellCommand]:
    """Every command of every fenced shell block in ``markdown``."""
    commands = []
    for first_line, language, lines in _shell_blocks(markdown):
        for line, text in _command_texts(lines, first_line, prompt="$ " if language == "console" else None):
            commands.append(parse_command(text, f"{name}:{line}", line))
    return commands


def parse_command(text: str, source: str = "<text>", line: int = 0) -> ShellCommand:
    """One shell command (no chains, no comment) as a classified ``ShellCommand``."""
    protected = _PLACEHOLDER.sub(lambda match: "<" + match.group(1).replace(" ", "_") + ">", text)
    words = shlex.split(protected)
    env = []
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env.append((key, value))
    return ShellCommand(source, line, text, tuple(env), tuple(words), classify(words))


def classify(argv: list[str] | tuple[str, ...]) -> str:
    """The kind of a command (a key of ``KINDS``), or ``unknown``."""
    if not argv:
        return "unknown"
    program = PurePosixPath(argv[0]).name
    if program in ("make", "visionlake"):
        return program
    if program == "export":
        return "env"
    if program == "cp":
        return "copy"
    if program in SETUP_PROGRAMS:
        return "setup"
    if re.fullmatch(r"python(3(\.\d+)?)?", program):
        if len(argv) > 2 and argv[1] == "-m" and argv[2] in ("venv", "pip"):
            return "setup"
        return "job" if len(argv) > 1 and job_name(argv[1]) else "unknown"
    if program == "spark-submit":
        return master_kind(split_spark_submit(argv)[0].get("--master", [None])[-1])
    return "unknown"


def master_kind(master: Optional[str]) -> str:
    """``job`` for no master or a local one, ``cluster`` for a standalone master on this machine, else ``remote``."""
    if master is None or master == "local" or master.startswith("local["):
        return "job"
    host = re.match(r"^spark://([^:/]+)", master)
    return "cluster" if host and host.group(1) in ("127.0.0.1", "localhost") else "remote"


def split_spark_submit(argv: list[str] | tuple[str, ...]) -> tuple[dict[str, list[str]], Optional[str], list[str]]:
    """spark-submit's own options (option -> values, in order), the application, and the application's arguments."""
    options: dict[str, list[str]] = {}
    words = list(argv[1:])
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in _SPARK_SUBMIT_SWITCHES:
            options.setdefault(option, []).append("")
        elif "=" in option and option.startswith("--"):
            key, _, value = option.partition("=")
            options.setdefault(key, []).append(value)
        elif words:
            options.setdefault(option, []).append(words.pop(0))
    return options, (words[0] if words else None), words[1:]


def job_name(application: str) -> Optional[str]:
    """``train_gan`` for ``jobs/train_gan.py`` (also ``local:///opt/visionlake/jobs/train_gan.py``), else None."""
    path = PurePosixPath(re.sub(r"^local://", "", application))
    return path.stem if path.suffix == ".py" and path.parent.name == "jobs" else None


# What spark-submit commands may ship: artefact -> (the make target that builds it, what its recipe must mention).
def make_artefacts() -> dict[str, tuple[str, str]]:
    import visionlake

    return {f"dist/visionlake-{visionlake.__version__}-py3-none-any.whl": ("dist", "-w dist"),
            "dist/visionlake-env.tar.gz": ("cluster-env", "visionlake-env.tar.gz"),
            "dist/jars/*.jar": ("dist", "dist/jars")}


def make_dry_run(*targets: str) -> str:
    """``make -n -B TARGET...`` in the checkout: the recipes it would run, built or not (nothing runs).

    Raises:
        CommandError: a target, or one of its prerequisites, has no rule.
    """
    result = subprocess.run(["make", "-n", "-B", "--no-print-directory", *targets], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    if result.returncode != 0:
        raise CommandError(f"`make {' '.join(targets)}` does not resolve: {result.stderr.strip()}")
    return result.stdout


def check_command(command: ShellCommand, base_dir: Path, earlier: tuple[ShellCommand, ...] = ()) -> None:
    """Checks that ``command`` would run as written, without running Spark or anything slow (see ``KINDS``).

    Args:
        command: the command.
        base_dir: where relative paths in configs resolve (a temp folder: nothing is written there).
        earlier: the commands before it, for the files they create (``cp``).

    Raises:
        CommandError: what is wrong, with the command's place.
    """
    try:
        _CHECKS[command.kind](command, base_dir, earlier)
    except CommandError as error:
        raise CommandError(f"{command.source}: {error}\n  {command.text}") from None


def _check_unknown(command: ShellCommand, base_dir: Path, earlier: tuple[ShellCommand, ...]) -> None:
    raise CommandError(f"no known kind of command ({', '.join(KINDS)}): classify it in tests/readme_commands.py")


def _check_make(command: ShellCommand, base_dir: Path, earlier: tuple[ShellCommand, ...]) -> None:
    targets = [word for word in command.argv[1:] if not word.startswith("-") and "=" not in word]
    if not targets:
        raise CommandError("name the make target")
    make_dry_run(*targets)


def _check_visionlake(command: ShellCommand, base_dir: Path, earlier: tuple[ShellCommand, ...]) -> None:
    _load(command.argv[1:], None, base_dir, earlier, files={})


def _check_job(command: ShellCommand, base_dir: Path, earlier: tuple[ShellCommand, ...]) -> None:
    from visionlake.config import ConfigError, check_reachable_from_executors

    argv = command.resolve(**{name: _sample(name) for name in command.placeholders})
    submit = PurePosixPath(argv[0]).name == "spark-submit"
    if submit:
        options, application, arguments = split_spark_submit(argv)
    else:  # python jobs/X.py ...
        options, application, arguments = {}, argv[1], argv[2:]
    if application is None or job_name(application) is None:
        raise CommandError(f"spark-submit names no jobs/*.py application (got {application!r})")
    job = job_name(application)
    if not (REPO / "jobs" / f"{job}.py").is_file():
        raise CommandError(f"there is no jobs/{job}.py")
    artefacts = make_artefacts()
    in_image = application.startswith("local:")  # an image's own Spark, its jars installed there
    if submit and "--jars" not in options and not in_image:
        raise CommandError("spark-submit needs Delta Lake's jars on the driver's classpath: --jars 'dist/jars/*.jar'")
    for option in ("--py-files", "--archives", "--jars"):
        for value in options.get(option, []):
            for shipped in value.split(","):
                _check_artefact(shipped.split("#")[0], option, artefacts)
    files = {}
    for value in options.get("--files", []):
        for shipped in value.split(","):
            if "/" in shipped and not shipped.startswith(("/", "hdfs:", "s3a:", "http")):
                if not _exists(shipped, earlier):
                    raise CommandError(f"--files {shipped}: no such file in the checkout")
                files[PurePosixPath(shipped).name] = shipped
    config = _load(arguments, job, base_dir, earlier, files)
    master = options.get("--master", ["local[*]"])[-1]
    try:
        check_reachable_from_executors(config, master)
    except ConfigError as error:
        raise CommandError(f"the job would refuse to start under --master {master}: {error}") from None


def _check_env(command: ShellCommand, base_dir: Path, earlier: tuple[ShellCommand, ...]) -> None:
    if not command.argv[1:] or not all(re.match(r"^[A-Za-z_]\w*=", word) for word in command.argv[1:]):
        raise CommandError("export takes VAR=value assignments")


def _check_copy(command: ShellCommand, base_dir: Path, earlier: tuple[ShellCommand, ...]) -> None:
    paths = [word for word in command.argv[1:] if not word.startswith("-")]
    if len(paths) != 2 or not _exists(paths[0], earlier):
        raise CommandError(f"cp needs an existing source in the checkout and a target, got {paths}")


def _check_setup(command: ShellCommand, base_dir: Path, earlier: tuple[ShellCommand, ...]) -> None:
    argv = list(command.argv)
    for option, value in zip(argv, argv[1:]):
        if option in ("-c", "-r", "--constraint", "--requirement") and not (REPO / value).is_file():
            raise CommandError(f"{option} {value}: no such file in the checkout")


_CHECKS = {"make": _check_make, "visionlake": _check_visionlake, "job": _check_job, "cluster": _check_job,
           "remote": _check_job, "env": _check_env, "copy": _check_copy, "setup": _check_setup,
           "unknown": _check_unknown}


def _check_artefact(path: str, option: str, artefacts: dict[str, tuple[str, str]]) -> None:
    if path not in artefacts:
        raise CommandError(f"{option} {path} is not something the Makefile builds: ship one of {sorted(artefacts)}")
    target, recipe = artefacts[path]
    if recipe not in make_dry_run(target):
        raise CommandError(f"{option} {path}: `make {target}` does not build it (its recipe never mentions "
                           f"{recipe!r})")


def _load(arguments: list[str], job: Optional[str], base_dir: Path, earlier: tuple[ShellCommand, ...],
          files: dict[str, str]):
    """Parses the arguments as ``visionlake`` (job None) or ``jobs/<job>.py`` does and loads the config."""
    from visionlake.operate.cli import parse_arguments
    from visionlake.config import ConfigError, load_config

    usage = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(usage):
            args = parse_arguments(list(arguments), job)
    except SystemExit as exit_:
        if exit_.code == 0:  # --help
            return None
        raise CommandError(f"{'jobs/' + job + '.py' if job else 'visionlake'} rejects its arguments: "
                           f"{usage.getvalue().strip().splitlines()[-1]}") from None
    conf = [_conf_path(path, earlier, files) for path in args.conf or []]
    try:
        return load_config(conf, args.overrides, base_dir=str(base_dir))
    except ConfigError as error:
        raise CommandError(f"its config does not load: {error}") from None


def _conf_path(conf: str, earlier: tuple[ShellCommand, ...], files: dict[str, str]) -> str:
    """The checkout's file a job's ``--conf`` names: a repo path, a ``--files`` name (YARN puts it in the container's
    folder), a ``cp`` target of an earlier command, or ``/<image or node path>/conf/<name>`` for the checkout's
    ``conf/<name>`` installed elsewhere."""
    candidates = [conf, files.get(conf, "")]
    if conf.startswith("/") and PurePosixPath(conf).parent.name == "conf":
        candidates.append(f"conf/{PurePosixPath(conf).name}")
    for candidate in filter(None, candidates):
        source = _copied_from(candidate, earlier)
        if (REPO / source).is_file():
            return str(REPO / source)
    raise CommandError(f"--conf {conf}: no such file in the checkout (nor copied there by an earlier README command)")


def _copied_from(path: str, earlier: tuple[ShellCommand, ...]) -> str:
    for command in reversed(earlier):
        if command.kind == "copy" and len(command.argv) == 3 and command.argv[2] == path:
            return command.argv[1]
    return path


def _exists(path: str, earlier: tuple[ShellCommand, ...]) -> bool:
    return (REPO / _copied_from(path, earlier)).exists()


def _sample(placeholder: str) -> str:
    """A value for a placeholder when checking (the harness gives real ones)."""
    return "7077" if placeholder.endswith("port") else f"/var/tmp/{placeholder}"


def _shell_blocks(markdown: str) -> list[tuple[int, str, list[str]]]:
    """(line number of the block's first line, language, lines) of every fenced shell block."""
    blocks, current, language, first = [], None, "", 0
    for number, line in enumerate(markdown.splitlines(), start=1):
        fence = _FENCE.match(line)
        if current is None and fence:
            current, language, first = [], fence.group(2).lower(), number + 1
        elif current is not None and fence and not fence.group(2):
            if language in SHELL_LANGUAGES:
                blocks.append((first, language, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _command_texts(lines: list[str], first_line: int, prompt: Optional[str]) -> list[tuple[int, str]]:
    """(line, text) of each command: continuations joined, comments dropped, chains split."""
    commands, pending, start = [], "", 0
    for offset, raw in enumerate(lines):
        line = raw.strip()
        if not pending:
            if prompt is not None:
                if not line.startswith(prompt):
                    continue  # console output
                line = line[len(prompt):].strip()
            start = first_line + offset
        code = _strip_comment(line)
        if code.endswith("\\"):
            pending += code[:-1].rstrip() + " "
            continue
        text = (pending + code).strip()
        pending = ""
        commands.extend((start, part) for part in _split_chain(text) if part)
    return commands


def _strip_comment(line: str) -> str:
    """The line without its ``#`` comment (a ``#`` that starts a word, outside quotes, as the shell reads it)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def _split_chain(text: str) -> list[str]:
    """``a && b; c | d`` -> [a, b, c, d] (outside quotes)."""
    parts, quote, current, index = [], None, "", 0
    while index < len(text):
        char = text[index]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif text.startswith(("&&", "||"), index):
            parts.append(current.strip())
            current, index = "", index + 2
            continue
        elif char in ";|":
            parts.append(current.strip())
            current, index = "", index + 1
            continue
        current += char
        index += 1
    parts.append(current.strip())
    return parts
