"""Every code block of the documentation site (docs/**/*.md) and of the README is
checked, so none can rot.

A fenced block is one of these; an HTML comment on the line just before its
fence (``<!-- check: WORDS -->``, invisible on the site) says which when the
default is not meant:

* ``python``, no comment — **run**: written to a file in a temporary directory
  of its page and run there as a script, in this test run's world
  (``python -m gevent.monkey FILE`` patched, ``python FILE`` plain), with a
  time limit. It must exit 0 and print no traceback.
* ``python`` with ``check: compile`` — a fragment that cannot run alone (a
  gunicorn config file, a handler that needs your application): compiled only.
* ``python`` with ``check: redis`` — run, with a redis-server of the test's own:
  ``redis://localhost:6379/0`` in the block is replaced by that server's URL.
* ``python`` with a ``title="NAME.py"`` — also saved as ``NAME.py`` in the
  page's directory before any block of the page runs, so later blocks (and
  console commands) can import or run it; one that a console command runs is
  run only by that command.
* ``text`` with ``check: output`` (or ``check: stderr``) — what the nearest run
  block above it prints on stdout (stderr): compared line by line, trailing
  blanks ignored, ``...`` matching anything (as doctest's ELLIPSIS).
* ``text`` with ``check: message tests/NAME.py`` — a message gworker prints
  where the test cannot make it happen (a missing package, a gunicorn master):
  each line must be written out in that test file, which checks that gworker
  prints it.
* ``console`` — shell commands, each on a line starting with ``$ ``, the lines
  below a command being what it prints. Every command must parse
  (``bash -n``) and every ``examples/``, ``benchmarks/`` or ``tests/`` path it
  names must exist, every extra in ``.[extra]`` or ``gworker[extra]`` must be
  one of setup.cfg's. A ``python`` command that runs a file of the repository
  or of the page (``python examples/quickstart.py``, ``python hello.py``) is
  run (in the repository's root, or in the page's directory for a file of the
  page), and what it prints compared as for
  ``check: output``; any other command must show no output.
* a block with no language (the README's Quick start) — shell commands, one a
  line: each must parse, and the files and extras it names must exist.
* ``yaml`` with ``check: yaml`` — a configuration (a Kubernetes probe): it
  must parse (PyYAML's ``safe_load``) into a mapping.
* an include (``--8<-- "examples/NAME.py"``, pymdownx.snippets) — the file must
  exist and some test under tests/ must name it (so it is run there), or an
  example that a test names must.

Blocks run several at a time, each in a process of its own, forked by
tests/docs_runner.py (which imports python's and gevent's start-up once for
all); a page's blocks share its temporary directory. The repository's root is
on sys.path, so the gworker being tested is this tree's.
"""
import configparser
import json
import os
import re
import shlex
import shutil
import sys
import tempfile

import gevent.subprocess as gsubprocess
import pytest

from conftest import PATCHED

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOCS = os.path.join(ROOT, "docs")
TIME_LIMIT = 60
CONCURRENCY = 4
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>.*)$")
CHECK = re.compile(r"^\s*<!--\s*check:\s*(?P<words>[^>]*?)\s*-->\s*$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
INCLUDE = re.compile(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$')
REDIS_URL = "redis://localhost:6379/0"
KINDS = {"python", "text", "console", "yaml", ""}


class Block:
    """One fenced block of a page."""

    def __init__(self, page, line, lang, title, words, text):
        self.page = page          # path relative to the repository
        self.line = line          # 1-based line of the opening fence
        self.lang = lang
        self.title = title
        self.words = words        # the words of the check: comment before it
        self.text = text
        self.runner = None        # for an output block: the run block it shows
        self.by_console = False   # a file of the page that a console command runs

    @property
    def id(self):
        return "%s:%d" % (self.page, self.line)

    @property
    def include(self):
        lines = [l for l in self.text.splitlines() if l.strip()]
        if lines and all(INCLUDE.match(l) for l in lines):
            return [INCLUDE.match(l).group("path") for l in lines]
        return None

    @property
    def runs(self):
        return (self.lang == "python" and self.include is None
                and "compile" not in self.words and not self.by_console)


def parse(page):
    """The fenced blocks of ``page`` (a path relative to the repository), in order."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, fence = i, len(m.group("indent")), m.group("fence")
        info = m.group("info").strip()
        lang = info.split()[0] if info else ""
        title = TITLE.search(info)
        words = []
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        c = CHECK.match(lines[j]) if j >= 0 else None
        if c:
            words = c.group("words").split()
        body = []
        i += 1
        while i < len(lines) and not re.match(r"^ {0,%d}%s\s*$" % (indent, fence), lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        blocks.append(Block(page, start + 1, lang, title.group("title") if title else None, words,
                            "\n".join(body) + "\n"))
    ran = set()
    for b in blocks:
        if b.lang == "console":
            ran.update(script_of(shlex.split(cmd)[1:]) for cmd, _ in console_commands(b)
                       if cmd.startswith("python "))
    for b in blocks:
        if b.title in ran:
            b.by_console = True   # a console command of the page runs it
    last_run = None
    for b in blocks:
        if b.runs:
            last_run = b
        elif b.lang == "text" and ({"output", "stderr"} & set(b.words)):
            b.runner = last_run
    return blocks


def pages():
    """README.md and docs/**/*.md."""
    out = ["README.md"]
    for dirpath, _, files in os.walk(DOCS):
        for name in sorted(files):
            if name.endswith(".md"):
                out.append(os.path.relpath(os.path.join(dirpath, name), ROOT))
    return out


# -- running -------------------------------------------------------------------------
class Runs:
    """Runs every run block and runnable console command once, several at a time."""

    def __init__(self):
        self.results = None
        self.dirs = {}
        self.redis = None

    def page_dir(self, page):
        if page not in self.dirs:
            d = self.dirs[page] = tempfile.mkdtemp(prefix="gworker-docs-")
            for b in BLOCKS:
                if b.page == page and b.lang == "python" and b.title and b.include is None:
                    with open(os.path.join(d, b.title), "w") as f:
                        f.write(self.source(b))
        return self.dirs[page]

    def source(self, block):
        text = block.text
        if "redis" in block.words:
            text = text.replace(REDIS_URL, self.redis_url() or REDIS_URL)
        return text

    def redis_url(self):
        """The URL of the test's redis-server (started on first use), or None
        where there is no redis-server (a failure in CI)."""
        if self.redis is None:
            from test_redis_streams import RedisServer, SERVER_BIN
            if SERVER_BIN is None:
                assert os.environ.get("CI") != "true", "redis-server not found -- required in CI"
                return None
            self.redis = RedisServer(SERVER_BIN)
            self.redis.start()
        return self.redis.url

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GEVENT_")}
        env["PYTHONPATH"] = ROOT   # a block is a user's program, not a test: no monitor thread
        return env

    def jobs(self):
        """``(key, python arguments, cwd, page)`` of everything to run."""
        for b in BLOCKS:
            if b.runs:
                if "redis" in b.words and self.redis_url() is None:
                    continue
                d = self.page_dir(b.page)
                path = os.path.join(d, b.title or "block_%d.py" % b.line)
                if not b.title:
                    with open(path, "w") as f:
                        f.write(self.source(b))
                yield b.id, [path], d, b.page
            elif b.lang == "console":
                for n, (cmd, _) in enumerate(console_commands(b)):
                    argv = runnable(cmd, b.page)
                    if argv is not None:
                        cwd = ROOT if script_of(argv).startswith("examples/") else self.page_dir(b.page)
                        yield "%s#%d" % (b.id, n), argv, cwd, b.page

    def run_all(self):
        """Run every job: scripts in tests/docs_runner.py's forked children
        (python, gevent and gworker are imported once, not once a script);
        a command line with options of its own in a process of its own."""
        jobs = list(self.jobs())   # (writes the files, starts redis-server if a block needs it)
        world = ["-m", "gevent.monkey"] if PATCHED else []
        self.results = {}
        forked = [j for j in jobs if not j[1][0].startswith("-")]
        runner = gsubprocess.Popen(
            [sys.executable] + world + [os.path.join(HERE, "docs_runner.py"), "--jobs", str(CONCURRENCY)],
            cwd=ROOT, env=self.env(), stdin=gsubprocess.PIPE, stdout=gsubprocess.PIPE, text=True)
        lines = "".join(json.dumps({"key": key, "argv": [os.path.join(cwd, args[0])] + args[1:], "cwd": cwd,
                                    "path": [ROOT, self.page_dir(page)], "timeout": TIME_LIMIT}) + "\n"
                        for key, args, cwd, page in forked)
        out, _ = runner.communicate(lines + "\n", timeout=TIME_LIMIT * 3)
        for line in out.splitlines():
            r = json.loads(line)
            self.results[r["key"]] = (r["code"], r["out"], r["err"])
        for key, args, cwd, page in jobs:
            if args[0].startswith("-"):
                env = dict(self.env(), PYTHONPATH=os.pathsep.join([ROOT, self.page_dir(page)]))
                argv = [sys.executable] + (world if args[:2] != ["-m", "gevent.monkey"] else []) + args
                proc = gsubprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                                       timeout=TIME_LIMIT)
                self.results[key] = (proc.returncode, proc.stdout, proc.stderr)
        missing = [key for key, _, _, _ in jobs if key not in self.results]
        assert not missing, "docs_runner.py gave no result for %s" % missing

    def get(self, key):
        if key not in self.results:
            pytest.skip("not run: it needs redis-server")
        return self.results[key]

    def close(self):
        if self.redis is not None:
            self.redis.stop()
            shutil.rmtree(self.redis.dir, ignore_errors=True)
        for d in self.dirs.values():
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def runs():
    """Every block and command, run once, before the first test that asks
    (in the module fixture's setup: its subprocesses and files are the test
    harness's work, not gworker's)."""
    r = Runs()
    try:
        r.run_all()
        yield r
    finally:
        r.close()


def console_commands(block):
    """``[(command, [output lines])]`` of a console block."""
    out = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
        elif line.strip():
            raise AssertionError("%s: output before any command: %r" % (block.id, line))
    return out


def page_files(page):
    return {b.title for b in BLOCKS if b.page == page and b.title}


def runnable(cmd, page):
    """The python arguments of a console command the test runs, else None."""
    try:
        argv = shlex.split(cmd)
    except ValueError:
        return None
    if not argv or argv[0] != "python" or any(c in cmd for c in "|&;<>"):
        return None
    args = argv[1:]
    script = script_of(args)
    if script.startswith("examples/") or script in page_files(page):
        return args
    return None


def script_of(args):
    """The file a python command line runs (``[-m gevent.monkey] FILE ...``)."""
    if args[:2] == ["-m", "gevent.monkey"]:
        args = args[2:]
    return args[0] if args and not args[0].startswith("-") else ""


def matches(expected, actual):
    """``actual`` is ``expected`` line by line (trailing blanks ignored; ``...``
    matches anything, across lines too)."""
    norm = lambda s: "\n".join(l.rstrip() for l in s.strip("\n").splitlines())
    pattern = ".*?".join(re.escape(part) for part in norm(expected).split("..."))
    return re.fullmatch(pattern, norm(actual), re.S) is not None


def explain(block, result):
    code, out, err = result
    return "%s exited %s\n--- stdout\n%s\n--- stderr\n%s" % (block.id, code, out, err)


# -- the checks ----------------------------------------------------------------------
BLOCKS = [b for p in pages() for b in parse(p)]


def test_the_site_has_code_to_check():
    assert len([b for b in BLOCKS if b.runs]) >= 20, [b.id for b in BLOCKS]


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.runs], ids=lambda b: b.id)
def test_block_runs(block, runs):
    result = runs.get(block.id)
    assert result[0] == 0, explain(block, result)
    if "traceback" not in block.words:
        assert "Traceback" not in result[2], explain(block, result)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python" and not b.runs
                                   and b.include is None], ids=lambda b: b.id)
def test_fragment_compiles(block):
    compile(block.text, block.id, "exec")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "text" and "message" in b.words],
                         ids=lambda b: b.id)
def test_message_is_one_a_test_checks(block):
    (path,) = block.words[block.words.index("message") + 1:][:1] or [None]
    assert path and path.startswith("tests/") and os.path.exists(os.path.join(ROOT, path)), (
        "%s: check: message needs the test file that checks it" % block.id)
    with open(os.path.join(ROOT, path)) as f:
        # the test's literal, joined as Python joins adjacent string literals
        checked = re.sub(r'"\s*\n\s*"', "", f.read())
    for line in block.text.strip().splitlines():
        assert line.strip() in checked, "%s: %s does not check %r" % (block.id, path, line)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "text" and "message" not in b.words],
                         ids=lambda b: b.id)
def test_output_is_what_the_block_prints(block, runs):
    assert {"output", "stderr"} & set(block.words), (
        "%s: a text block must be the output of a block (<!-- check: output -->)" % block.id)
    assert block.runner is not None, "%s: no run block above this output" % block.id
    result = runs.get(block.runner.id)
    shown = result[1] if "output" in block.words else result[2]
    assert matches(block.text, shown), "%s shows\n%s\nbut %s prints\n%s" % (
        block.id, block.text, block.runner.id, shown)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "yaml"], ids=lambda b: b.id)
def test_yaml_parses(block):
    yaml = pytest.importorskip("yaml") if os.environ.get("CI") != "true" else __import__("yaml")
    assert "yaml" in block.words, "%s: a yaml block says <!-- check: yaml -->" % block.id
    assert isinstance(yaml.safe_load(block.text), dict), "%s: not a mapping" % block.id


def _extras():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    return set(cfg["options.extras_require"])


def check_command(block, cmd):
    """``cmd`` parses, and the files and extras it names exist."""
    check = gsubprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
    assert check.returncode == 0, "%s: %r does not parse: %s" % (block.id, cmd, check.stderr)
    for path in re.findall(r"(?:examples|benchmarks|tests)/[\w./-]+", cmd):
        assert os.path.exists(os.path.join(ROOT, path)), "%s: no such file %s" % (block.id, path)
    for extra in re.findall(r"(?:\.|gworker)\[([\w,-]+)\]", cmd):
        for name in extra.split(","):
            assert name in _extras(), "%s: no extra %r in setup.cfg" % (block.id, name)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "console"], ids=lambda b: b.id)
def test_console_commands(block, runs):
    commands = console_commands(block)
    assert commands, "%s: a console block with no command" % block.id
    for n, (cmd, shown) in enumerate(commands):
        check_command(block, cmd)
        if runnable(cmd, block.page) is None:
            assert not [l for l in shown if l.strip()], (
                "%s: %r is not run by the test, so it may show no output" % (block.id, cmd))
            continue
        result = runs.get("%s#%d" % (block.id, n))
        assert result[0] == 0, explain(block, result)
        assert matches("\n".join(shown), result[1] + result[2]), "%s: %r shows\n%s\nbut prints\n%s" % (
            block.id, cmd, "\n".join(shown), result[1] + result[2])


def _named_by_tests():
    """The text of tests/*.py (but this file), and of each example they name
    (``gunicorn.conf.py`` names the ``gunicorn_app`` the e2e test runs)."""
    tests = ""
    for name in os.listdir(HERE):
        if name.endswith(".py") and name != os.path.basename(__file__):
            with open(os.path.join(HERE, name)) as f:
                tests += f.read()
    examples = os.path.join(ROOT, "examples")
    for name in os.listdir(examples):
        if name.endswith(".py") and name in tests:
            with open(os.path.join(examples, name)) as f:
                tests += f.read()
    return tests


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "" and b.include is None], ids=lambda b: b.id)
def test_plain_command_lines(block):
    for cmd in [l for l in block.text.splitlines() if l.strip()]:
        check_command(block, cmd)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.include is not None], ids=lambda b: b.id)
def test_included_files_are_run_by_a_test(block):
    tests = _named_by_tests()
    for path in block.include:
        assert os.path.exists(os.path.join(ROOT, path)), "%s: no such file %s" % (block.id, path)
        base = os.path.basename(path)
        assert base in tests or os.path.splitext(base)[0] in tests, (
            "%s: no test names %s" % (block.id, path))


def test_every_block_is_of_a_known_kind():
    unknown = [b.id + " " + b.lang for b in BLOCKS if b.include is None and b.lang not in KINDS]
    assert not unknown, "blocks the test does not know how to check: %s" % unknown
