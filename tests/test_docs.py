"""The documentation runs: every command shown in README.md and docs/*.md is executed.

Convention (docs/index.md states it for writers):

- A fenced ```console block is runnable. Each line starting with ``$ `` is a command (a trailing
  ``\\`` continues it on the next line); the other lines are output excerpts and are not compared.
  A command ending in ``# exit N`` must exit with N; every other command must exit 0.
- A fenced ```python block right after the line ``<!-- test: run -->`` is run as a script.
- Everything else (```bash, ```yaml, ```text, indented blocks) is illustrative and not run.
- A page with the line ``<!-- test: slow -->`` is marked slow.

The runnable blocks of one page run in order, in one fresh folder holding a copy of sample_models/
(so ``sample_models/cnn.onnx`` works), with ``snnconv`` and ``python`` resolved to the console
script and interpreter of the environment running the tests, importing this source tree.
docs/cli.md is generated from the typer app: its console blocks are usage synopses, and
``test_cli_reference_is_current`` checks it instead. New pages are picked up automatically.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GENERATED = {"docs/cli.md"}
RUN_MARK = "<!-- test: run -->"
SLOW_MARK = "<!-- test: slow -->"
CLI_DOCS_TYPER = "0.29.2"  # the typer that wrote docs/cli.md (others format it differently)
CLI_DOCS = [sys.executable, "-m", "typer", "snnconv.cli", "utils", "docs", "--name", "snnconv",
            "--title", "Command line"]

_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
_EXIT = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")


@dataclass
class Step:
    kind: str  # "shell" or "python"
    code: str
    line: int  # 1-based line in the page
    exit_code: int = 0


def extract(text: str) -> list[Step]:
    """The runnable steps of a page, in order."""
    steps: list[Step] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i].strip())
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # closing fence
        prev = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        if lang == "console":
            j = 0
            found = False
            while j < len(body):
                ln = body[j].strip()
                if ln.startswith("$ "):
                    found = True
                    at = start + 2 + j
                    cmd = ln[2:]
                    while cmd.endswith("\\") and j + 1 < len(body):
                        j += 1
                        cmd = cmd[:-1] + " " + body[j].strip()
                    code = 0
                    em = _EXIT.search(cmd)
                    if em:
                        code = int(em.group(1))
                        cmd = cmd[:em.start()]
                    steps.append(Step("shell", cmd.strip(), at, code))
                j += 1
            if not found:
                raise ValueError(f"line {start + 1}: a console block without '$ ' commands "
                                 "(use ```text for output only)")
        elif lang == "python" and prev == RUN_MARK:
            steps.append(Step("python", "\n".join(body) + "\n", start + 2))
    return steps


def pages() -> list[str]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [p.relative_to(ROOT).as_posix() for p in found
            if p.relative_to(ROOT).as_posix() not in GENERATED]


def _param(page: str):
    lines = (ROOT / page).read_text().splitlines()
    marks = [pytest.mark.slow] if any(ln.strip() == SLOW_MARK for ln in lines) else []
    return pytest.param(page, id=page, marks=marks)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env.pop("NO_COLOR", None)
    env.pop("FORCE_COLOR", None)
    return env


@pytest.mark.parametrize("page", [_param(p) for p in pages()])
def test_page_runs(page, tmp_path):
    steps = extract((ROOT / page).read_text())
    if not steps:
        pytest.skip(f"{page} shows nothing runnable")
    if not (BIN / "snnconv").exists():
        pytest.fail(f"no snnconv console script next to {sys.executable}: pip install -e .")
    shutil.copytree(ROOT / "sample_models", tmp_path / "sample_models")
    env = _env()
    for k, st in enumerate(steps):
        if st.kind == "python":
            script = tmp_path / f"_docs_block_{k}.py"
            script.write_text(st.code)
            argv = [sys.executable, script.name]
            shown = f"python block at {page}:{st.line}"
        else:
            argv = ["bash", "-c", st.code]
            shown = f"$ {st.code}   ({page}:{st.line})"
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300, stdin=subprocess.DEVNULL)
        assert r.returncode == st.exit_code, (
            f"{shown}\nexited {r.returncode}, the page says {st.exit_code}\n"
            f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")
        # output that is not a terminal carries no colour codes (NO_COLOR is not set here)
        assert "\x1b[" not in r.stdout + r.stderr, f"{shown}: escape codes in plain output"


def test_pages_are_found_and_have_commands():
    """The extraction must see the tours; an empty result would make the page tests vacuous."""
    ps = pages()
    assert "README.md" in ps and "docs/quickstart.md" in ps and "docs/verify.md" in ps
    assert "docs/cli.md" not in ps
    counts = {p: len(extract((ROOT / p).read_text())) for p in ps}
    assert counts["README.md"] >= 2 and counts["docs/quickstart.md"] >= 4
    assert counts["docs/verify.md"] >= 2 and counts["docs/errors.md"] >= 6
    assert sum(counts.values()) >= 25


def test_extract_convention():
    text = "\n".join([
        "```bash", "$ not run", "```",
        "```console",
        "$ snnconv convert a.onnx \\",
        "    -o a.snn",
        "output line",
        "$ snnconv verify a.snn  # exit 1",
        "```",
        "```python", "print('not run')", "```",
        RUN_MARK, "", "```python", "print('run')", "```",
        "    $ indented: not run",
    ])
    steps = extract(text)
    assert [(s.kind, s.code, s.exit_code) for s in steps] == [
        ("shell", "snnconv convert a.onnx  -o a.snn", 0),
        ("shell", "snnconv verify a.snn", 1),
        ("python", "print('run')\n", 0),
    ]
    assert steps[0].line == 5 and steps[1].line == 8
    with pytest.raises(ValueError, match="without"):
        extract("```console\njust output\n```\n")


def test_readme_starts_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("## ")[0]
    assert "make demo" in head and "make test" in head
    assert head.index("make demo") < head.index("make test")


def test_cli_reference_is_current():
    """Every command, option and help text of the app is in docs/cli.md; with the typer version
    that generated the file, the file is exactly what the generator writes now."""
    import typer

    have = (ROOT / "docs/cli.md").read_text()
    regen = " ".join(["python", *CLI_DOCS[1:], "--output", "docs/cli.md"])
    group = _cli()
    for name, cmd in group.commands.items():
        assert f"## `snnconv {name}`" in have, f"docs/cli.md lacks {name}; regenerate: {regen}"
        section = have.split(f"## `snnconv {name}`", 1)[1].split("\n## ", 1)[0]
        for p in cmd.params:
            for o in p.opts:
                assert f"{o}" in section, f"docs/cli.md lacks {name} {o}; regenerate: {regen}"
            if p.help:  # as rendered: rich markup escapes removed
                assert " ".join(p.help.replace("\\[", "[").split()) in " ".join(section.split()), (
                    f"docs/cli.md has an old help text of {name} {p.name}; regenerate: {regen}")
    if typer.__version__ != CLI_DOCS_TYPER:
        pytest.skip(f"docs/cli.md was generated with typer {CLI_DOCS_TYPER}, "
                    f"typer {typer.__version__} formats it differently")
    r = subprocess.run(CLI_DOCS, cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert have == r.stdout.strip() + "\n", f"docs/cli.md is out of date; regenerate: {regen}"


def test_supported_ops_table_matches_the_importer():
    """README's table of ONNX ops lists exactly the ops the importer registers."""
    from snnconv.importer.registry import HANDLERS

    text = (ROOT / "README.md").read_text()
    section = text.split("## Supported ONNX ops", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for row in section.splitlines():
        if row.startswith("|") and not row.startswith("|---"):
            listed |= set(re.findall(r"`(\w+)`", row.split("|")[1]))
    assert listed == set(HANDLERS), (f"missing from README: {sorted(set(HANDLERS) - listed)}; "
                                     f"not registered: {sorted(listed - set(HANDLERS))}")


def test_every_error_class_is_documented():
    from snnconv import errors

    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.SnnconvError)]
    text = (ROOT / "docs/errors.md").read_text()
    for c in classes:
        m = re.search(rf"^## `{c.__name__}`.*?\(exit (\d)\)", text, re.M)
        assert m, f"docs/errors.md has no section '## `{c.__name__}` (exit N)'"
        assert int(m.group(1)) == c.exit_code, c.__name__


def test_nav_lists_every_page():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def walk(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, list):
            for v in x:
                yield from walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                yield from walk(v)

    listed = set(walk(nav))
    have = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert have == listed, f"not in mkdocs.yml nav: {sorted(have - listed)}"


# --- the CLI promises made in docs/cli.md and docs/errors.md ---------------------------------

def _cli():
    import typer.main

    from snnconv.cli import app

    return typer.main.get_command(app)


def test_every_command_has_json_quiet_help_and_examples():
    group = _cli()
    assert "Exit codes: 0 ok, 1 verification mismatch, 2 bad input or usage, 3 internal" in \
        group.help
    for name, cmd in group.commands.items():
        opts = {o for p in cmd.params for o in p.opts}
        assert {"--json", "--quiet"} <= opts, f"snnconv {name} lacks --json or --quiet"
        assert "Examples:" in (cmd.help or ""), f"snnconv {name} --help shows no examples"
        assert f"snnconv {name} " in cmd.help
        for p in cmd.params:
            assert p.help or p.name == "help", f"snnconv {name}: option {p.name} has no help"


def test_version_and_completion():
    from typer.testing import CliRunner

    from snnconv import __version__
    from snnconv.cli import app

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"snnconv {__version__}"
    # typer's completion, through the installed console script as a shell would call it
    env = dict(_env(), _SNNCONV_COMPLETE="complete_bash", COMP_WORDS="snnconv verify --allow",
               COMP_CWORD="2")
    r = subprocess.run([str(BIN / "snnconv")], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["--allow-clipping"], r.stdout + r.stderr


def test_membrane_traces_follow_the_model(digits):
    """The concepts figure's potentials are the model's: V reaches theta exactly at the
    simulator's spike time, V(t_min) is the closed-form potential, and the readout's
    V(t_min) + bias is the simulator's logit. The ResNet has delayed (skip) inputs."""
    import snnconv
    from snnconv.plots import membrane_traces

    snn = snnconv.convert(ROOT / "sample_models/resnet.onnx", digits["train_x"][:100])
    x = digits["test_x"][:2]
    for sample in range(2):
        traces = membrane_traces(snn, x, sample=sample)
        assert [t["name"] for t in traces] == [snn.input.name] + [
            la.name for la in snn.layers if la.kind in ("neuron", "readout")]
        logits = snn.simulate(x[sample:sample + 1]).logits[0].numpy()
        silent = 0
        for tr in traces[1:]:
            for nrn in tr["neurons"]:
                t, v = nrn["t"], nrn["v"]
                assert t[0] == 0.0 and v[0] == 0.0 and (t[1:] >= t[:-1]).all()
                at_tmin = v[t == tr["t_min"]]
                assert len(at_tmin) == 1 and abs(at_tmin[0] - nrn["v_tmin"]) <= 1e-9 * max(
                    1.0, abs(nrn["v_tmin"]))
                if tr["kind"] == "readout":
                    assert abs(nrn["output"] - logits[nrn["index"]]) <= 1e-9 * abs(
                        logits).max()
                elif nrn["spike"] is not None:
                    assert t[-1] == nrn["spike"] and tr["t_min"] <= t[-1] < tr["t_max"]
                    assert abs(v[-1] - nrn["theta"]) <= 1e-9 * abs(nrn["theta"])
                    assert (v[t >= tr["t_min"]][:-1] < nrn["theta"] + 1e-9).all()
                else:
                    silent += 1
                    assert t[-1] == tr["t_max"] and v[-1] < nrn["theta"] + 1e-9
        assert silent > 0


def test_site_builds_strict(tmp_path):
    """`make docs` must build without warnings: the same mkdocs build, into a temp folder."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
