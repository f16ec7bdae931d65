"""The documentation is true: every docstring example runs as written, from the repository root (as the README's
commands do); every `python <script>.py --flag ...` command of README.md, CONTRIBUTING.md and docs/ names flags
that script defines; links between the pages resolve; the README stays a front page."""

import doctest
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from helpers import REPO, SHARED_DATA, require_shared

import google_checkpoint
import huggingface
import model
import optimization
import plots
import simcse
import sts
import tokenization
import training

README = REPO / "README.md"
PAGES = [README, REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
# The pages for users (CONTRIBUTING.md may name where the tests find their data).
USER_PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250
# The pages hold more commands than this; fewer means the parser lost some.
MIN_COMMANDS = 30
SCRIPTS = [
    "train_unsupervised.py",
    "train_supervised.py",
    "evaluate.py",
    "export.py",
    "search.py",
    "report.py",
    "data.py",
    "benchmarks/train_step.py",
    "benchmarks/transfer_tasks.py",
]


# Where the examples read the shared data: its default place, wherever SIMCSE_SHARED_DATA puts it for the tests.
DOCUMENTED_SHARED_DATA = "../shared/data"


@pytest.mark.parametrize("module", [huggingface, model, optimization, plots, simcse, sts, tokenization, training])
def test_docstring_examples_run(monkeypatch, module):
    """A module's examples that read the shared data skip without it; the others run from a clone alone."""
    monkeypatch.chdir(REPO)
    tests = doctest.DocTestFinder().find(module)
    examples = [example for test in tests for example in test.examples]
    if any(DOCUMENTED_SHARED_DATA in example.source for example in examples):
        require_shared()
    for example in examples:
        example.source = example.source.replace(DOCUMENTED_SHARED_DATA, str(SHARED_DATA))
        example.want = example.want.replace(DOCUMENTED_SHARED_DATA, str(SHARED_DATA))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
    assert runner.tries > 0


# === Commands in the pages ===

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
SCRIPT = re.compile(r"^(?:\./)?((?:[\w.-]+/)*[\w-]+\.py)$")
SHELL_OPERATORS = {"<", ">", ">>", "|", "||", "&", "&&", ";", "(", ")"}


def code_blocks_and_prose(text):
    """(the lines of each fenced code block, the prose outside them); an unclosed fence is an error."""
    blocks, prose, block, fence = [], [], None, None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence, block = match.group(1), []
        elif fence is not None and line.strip() == fence:
            blocks.append(block)
            fence = None
        elif fence is not None:
            block.append(line)
        else:
            prose.append(line)
    assert fence is None, "a code fence is not closed"
    return blocks, "\n".join(prose)


def shell_lines(text):
    """Every line of shell in a Markdown page: the code blocks' lines, continuations (a trailing backslash) joined,
    and the inline code spans of the prose."""
    blocks, prose = code_blocks_and_prose(text)
    lines = []
    for block in blocks:
        joined = ""
        for line in block:
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
            else:
                lines.append(joined + line)
                joined = ""
        if joined:
            lines.append(joined)
    lines += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    return lines


def commands(text):
    """[(script, [flag token, ...], the command's text)] of every `python <script>.py ...` in a Markdown page. Flag
    tokens are the arguments starting with '-' (optional ones in [brackets] too), up to the end of the command."""
    found = []
    for line in shell_lines(text):
        if not re.search(r"\bpython3?\s+\S+\.py\b", line):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for start, token in enumerate(tokens):
            if token not in ("python", "python3") or start + 1 == len(tokens):
                continue
            script = SCRIPT.match(tokens[start + 1])
            if not script:
                continue
            arguments = []
            for argument in tokens[start + 2 :]:
                if argument in SHELL_OPERATORS or argument in ("python", "python3"):
                    break
                argument = argument.strip("[]")
                if argument.startswith("-") and argument.strip("-"):
                    arguments.append(argument)
            found.append((script.group(1), arguments, line.strip()))
    return found


def flag_name(argument):
    """'--name=value' -> 'name', '-?' -> '?'."""
    return argument.lstrip("-").split("=", 1)[0]


def undefined_flags(arguments, defined):
    """The arguments that name no flag of `defined` ({"names", "booleans", "short_names"}); --noNAME is a boolean's
    negation, as absl parses it."""
    undefined = []
    for argument in arguments:
        name = flag_name(argument)
        if argument.startswith("--"):
            if name in defined["names"] or (name.startswith("no") and name[2:] in defined["booleans"]):
                continue
        elif name in defined["short_names"]:
            continue
        undefined.append(argument)
    return undefined


def script_help(script, run_in_fork):
    """absl's --helpxml of `python <script>`, run from the repository root: {"names", "booleans", "short_names",
    "xml"} of every flag the script defines when it runs (absl's own included). A process of its own per script
    (several define the same flag names, data.py defines its flags only when run): a fork of the session's
    fork_runner for a top-level script (which also knows the flags other scripts' imports define at import, tfds'
    --tfds_debug_list_dir for export.py), a fresh interpreter for benchmarks/."""
    if "/" in script:
        result = subprocess.run(
            [sys.executable, script, "--helpxml"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
        )
    else:
        result = run_in_fork(script, "--helpxml")
    start = result.stdout.find("<?xml")
    assert start >= 0, f"{script} --helpxml printed no XML: {result.stderr[-2000:]}"
    root = ElementTree.fromstring(result.stdout[start:])
    flags = root.findall("flag")
    return {
        "names": {flag.findtext("name") for flag in flags},
        "booleans": {flag.findtext("name") for flag in flags if flag.findtext("type") == "bool"},
        "short_names": {flag.findtext("short_name") for flag in flags if flag.findtext("short_name")},
        "xml": result.stdout[start:],
    }


@pytest.fixture(scope="module")
def script_flags(run_in_fork):
    """{script: script_help(script)} for every script."""
    return {script: script_help(script, run_in_fork) for script in SCRIPTS}


def page_commands():
    return [(page, *command) for page in PAGES for command in commands(page.read_text())]


def test_the_parser_finds_the_commands():
    found = page_commands()
    assert len(found) >= MIN_COMMANDS, found
    # Every script is documented by at least one command, in the README or docs/.
    assert {script for page, script, *_ in found if page in USER_PAGES} == set(SCRIPTS)


def test_every_documented_flag_is_defined(script_flags):
    problems = []
    for page, script, arguments, line in page_commands():
        if script not in script_flags:
            problems.append(f"{page.name}: `{line}`: {script} is not a known script")
            continue
        undefined = undefined_flags(arguments, script_flags[script])
        if undefined:
            problems.append(f"{page.name}: `{line}`: {', '.join(undefined)} not defined by {script}")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_made_up_flags(script_flags):
    page = """
Some prose with `python evaluate.py --checkpoint=x --no_such_flag` inline and
`python search.py --model=m --corpus=c < queries.txt` with a redirection.

```
TF_CONFIG='{"task": {"index": 0}}' \\
    python train_unsupervised.py --mixed_precision --nomixed_precision \\
    [--made_up=3] --helpfull --verbosity=1 -v 1
python data.py prepare --source_dir=SOURCE --nosource_dir
python benchmarks/train_step.py --steps=2 && python export.py --output=o --madeup
python -m pytest -q
```
"""
    found = commands(page)
    assert [(script, arguments) for script, arguments, _ in found] == [
        ("train_unsupervised.py", ["--mixed_precision", "--nomixed_precision", "--made_up=3", "--helpfull",
                                   "--verbosity=1", "-v"]),
        ("data.py", ["--source_dir=SOURCE", "--nosource_dir"]),
        ("benchmarks/train_step.py", ["--steps=2"]),
        ("export.py", ["--output=o", "--madeup"]),
        ("evaluate.py", ["--checkpoint=x", "--no_such_flag"]),
        ("search.py", ["--model=m", "--corpus=c"]),
    ]  # fmt: skip
    undefined = {script: undefined_flags(arguments, script_flags[script]) for script, arguments, _ in found}
    assert undefined == {
        "train_unsupervised.py": ["--made_up=3"],  # absl's own --helpfull, --verbosity and -v are defined
        "data.py": ["--nosource_dir"],  # --no is for booleans only
        "benchmarks/train_step.py": [],
        "export.py": ["--madeup"],
        "evaluate.py": ["--no_such_flag"],
        "search.py": [],
    }


# === Flags that tables and prose say a script takes ===

TOP_LEVEL_SCRIPTS = [script for script in SCRIPTS if "/" not in script]
TRAINING_SCRIPTS = ["train_unsupervised.py", "train_supervised.py"]
# How the tables' "where" column names scripts.
WHERE = {
    "evaluate": ["evaluate.py"],
    "export": ["export.py"],
    "search": ["search.py"],
    "report": ["report.py"],
    "prepare": ["data.py"],
    "`data.py prepare`": ["data.py"],
    "training": TRAINING_SCRIPTS,
    "train_unsupervised": ["train_unsupervised.py"],
    "train_supervised": ["train_supervised.py"],
    "every script": TOP_LEVEL_SCRIPTS,
    "everywhere": TOP_LEVEL_SCRIPTS,
}
FLAG = re.compile(r"--([a-z][a-z0-9_]*)")


def table_rows(text):
    """{header cell: cell} of every row of every Markdown table in the prose of a page."""
    _, prose = code_blocks_and_prose(text)
    rows, header = [], None
    for line in [*prose.splitlines(), ""]:
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if set(line) <= set("|-: "):
            continue
        if header is None:
            header = cells
        else:
            rows.append(dict(zip(header, cells, strict=False)))
    return rows


def scripts_in(where):
    """The scripts a "where" cell names ("evaluate, export, search"); a name it does not know is an error."""
    named = []
    for part in where.split(","):
        part = part.strip().removesuffix(" (the scripts)")
        assert part in WHERE, f"'{part}' names no script: add it to WHERE"
        named += WHERE[part]
    return named


def scripts_named(text):
    """The scripts a piece of prose names: `X.py` (or X.py), "every script", "both training scripts"."""
    scripts = [name for name in re.findall(r"([\w/]+\.py)\b", text) if name in SCRIPTS]
    scripts += TOP_LEVEL_SCRIPTS * ("every script" in text.lower())
    scripts += TRAINING_SCRIPTS * ("both training scripts" in text.lower())
    return sorted(set(scripts))


def claims_in_prose(text):
    """[(scripts, flags, sentence)] of every sentence of prose (tables and headings aside) that says scripts take
    flags: it names scripts (`scripts_named`), `--flag`s, and the verb take. A flag followed by the scripts in
    parentheses ("`--checkpoint` (evaluate.py, export.py)") is claimed of those alone."""
    _, prose = code_blocks_and_prose(text)
    lines = [line for line in prose.splitlines() if not line.startswith(("|", "#"))]
    claims = []
    for sentence in re.split(r"(?<=[.;])\s+|\n\s*\n", " ".join(lines).replace("  ", "\n\n")):
        if not re.search(r"\btakes?\b", sentence):
            continue
        paired = [
            (scripts_named(names), [flag], sentence)
            for flag, names in re.findall(r"`--([a-z][a-z0-9_]*)[^`]*`\s*\(([^)]*)\)", sentence)
            if scripts_named(names)
        ]
        if paired:
            claims += paired
            continue
        scripts = scripts_named(" ".join(re.findall(r"`([^`]+)`", sentence)) + " " + sentence)
        flags = FLAG.findall(" ".join(re.findall(r"`([^`]+)`", sentence)))
        if scripts and flags:
            claims.append((scripts, sorted(set(flags)), sentence))
    return claims


def test_flags_tables_and_prose_name_for_a_script_are_its_own(script_flags):
    """docs/errors.md's rows: every flag of the input holds for every script their "where" names (what happens may
    name another script's flag, as a fix to run); a sentence that says scripts take a flag holds for every script it
    names."""
    problems = []
    for page in PAGES:
        text = page.read_text()
        for row in table_rows(text):
            if "where" not in row:
                continue
            flags = set(FLAG.findall(row["input"]))
            for script in scripts_in(row["where"]):
                missing = sorted(flag for flag in flags if flag not in script_flags[script]["names"])
                if missing:
                    problems.append(f"{page.name}: {script} has no --{', --'.join(missing)}: {row}")
        for scripts, flags, sentence in claims_in_prose(text):
            for script in scripts:
                missing = [flag for flag in flags if flag not in script_flags[script]["names"]]
                if missing:
                    problems.append(f"{page.name}: {script} has no --{', --'.join(missing)}: {sentence}")
    assert not problems, "\n".join(problems)


def test_the_table_and_prose_checker_reads_what_it_should():
    page = """
| input | where | what happens | test |
|---|---|---|---|
| `--top_k=0` | search | `flag --top_k=0: 0 is not a positive integer` | test_errors |

Every script takes `--data_dir` (a claim). `export.py` writes a SavedModel. Both training scripts take `--seed`.
"""
    assert table_rows(page) == [
        {"input": "`--top_k=0`", "where": "search", "what happens": "`flag --top_k=0: 0 is not a positive integer`",
         "test": "test_errors"},
    ]  # fmt: skip
    assert scripts_in("evaluate, export, training") == ["evaluate.py", "export.py", *TRAINING_SCRIPTS]
    assert [(scripts, flags) for scripts, flags, _ in claims_in_prose(page)] == [
        (sorted(TOP_LEVEL_SCRIPTS), ["data_dir"]),
        (sorted(TRAINING_SCRIPTS), ["seed"]),
    ]


def test_parameter_counts_are_the_encoders():
    """Every "N parameters" of the pages is what the encoder of KR-BERT character's config loads (its checkpoint
    variables: no pretraining heads)."""
    config = model.BertConfig.from_json_file(REPO / "configs" / "char_bert_base.json")
    encoder_parameters = sum(int(np.prod(shape)) for shape in google_checkpoint.checkpoint_shapes(config).values())
    counts = {page.name: re.findall(r"([\d,]{9,}) parameters", page.read_text()) for page in PAGES}
    assert counts["README.md"] and counts["data.md"]
    assert {count for found in counts.values() for count in found} == {f"{encoder_parameters:,}"}


def test_code_fences_are_closed():
    blocks, prose = code_blocks_and_prose("text\n```\npython x.py\n```\nmore\n")
    assert blocks == [["python x.py"]] and "more" in prose
    with pytest.raises(AssertionError, match="not closed"):
        code_blocks_and_prose("```\npython x.py\n")


# === The pages themselves ===


def github_anchor(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text):
    _, prose = code_blocks_and_prose(text)
    return {github_anchor(line.lstrip("#")) for line in prose.splitlines() if re.match(r"^#{1,6} ", line)}


def test_links_between_pages_resolve():
    problems = []
    for page in PAGES:
        _, prose = code_blocks_and_prose(page.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                problems.append(f"{page.name}: {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
                problems.append(f"{page.name}: {target}: no such heading")
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    for page in PAGES[1:]:
        assert f"({page.relative_to(REPO)})" in text, f"the README does not link to {page.relative_to(REPO)}"
    for page in PAGES[1:]:
        title, blank, back = page.read_text().splitlines()[:3]
        assert title.startswith("# ") and not blank, page
        assert re.fullmatch(r"\[Back to the README\]\((\.\./)?README\.md\)", back), page


def test_the_readmes_test_command_is_what_ci_runs():
    ci_command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    blocks, _ = code_blocks_and_prose(README.read_text())
    assert [ci_command] == [line for block in blocks for line in block if "pytest" in line]


def test_markdown_tables_have_as_many_cells_as_their_header():
    problems = []
    for page in PAGES:
        _, prose = code_blocks_and_prose(page.read_text())
        table = None
        for line in prose.splitlines():
            if not line.startswith("|"):
                table = None
                continue
            cells = len(re.sub(r"`[^`]*`", "", line).strip().strip("|").split("|"))
            if table is None:
                table = cells
            elif cells != table:
                problems.append(f"{page.name}: {cells} cells, the header has {table}: {line[:80]}")
    assert not problems, "\n".join(problems)


def test_no_sample_data_path_for_users(script_flags):
    """Where the tests find their data (../shared) is the tests' business: not in the pages for users, nor in the
    scripts' help."""
    for page in USER_PAGES:
        assert "../shared" not in page.read_text(), page
    for script, defined in script_flags.items():
        assert "../shared" not in defined["xml"], script
