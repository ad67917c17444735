"""Reading a job file: the shipped examples, YAML's syntax errors, repeated keys, alias
bombs and merge keys, and a missing file; libyaml's parser and PyYAML's own alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.jobfile import job_text
from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler.job import JobSpecError, derive_tasks, load_job
from p2psched.scheduler.job.loader import LIBYAML, read_yaml
from tests.harness.jobspec import EXAMPLES, job_file, refusal


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_loads_and_derives_tasks(example: Path) -> None:
    spec = load_job(example)
    tasks = derive_tasks(spec)
    assert tasks
    assert len({t.task_id for t in tasks}) == len(tasks)
    assert all(t.driver in ("sleep", "echo", "command", "http") for t in tasks)
    assert all(Need.parse(str(t.need)) == t.need for t in tasks)  # a need travels as text


def test_hello_runs_on_any_worker_and_each_driver_has_an_example() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} >= {
        "hello.yaml",
        "sleep.yaml",
        "matrix.yaml",
        "llm.yaml",
    }
    hello = derive_tasks(load_job(EXAMPLES / "hello.yaml"))
    assert len(hello) == 6
    bare = Profile(cpu_model="any", cpu_cores=1, ram_gb=1.0, drivers=("echo",))
    assert all(t.driver == "echo" and t.need.matches(bare) for t in hello)
    for name, driver in [("sleep", "sleep"), ("matrix", "command"), ("llm", "http")]:
        assert {t.driver for t in derive_tasks(load_job(EXAMPLES / f"{name}.yaml"))} == {driver}


def test_a_yaml_syntax_error_is_refused_with_its_line_and_column(tmp_path: Path) -> None:
    (line,) = refusal(tmp_path, "name: x\ntasks:\n  - {input: [1, 2}\n")
    assert ": line 3, column 18: not valid YAML: " in line


def test_a_key_given_twice_is_refused_where_it_repeats(tmp_path: Path) -> None:
    (line,) = refusal(
        tmp_path, "name: x\nresources: {cpus: 2}\ntasks: [{input: 1}]\nresources: {}\n"
    )
    assert line.endswith(": line 4, column 1: refused: the key 'resources' is given twice")


def test_aliases_that_nest_a_value_in_itself_or_multiply_it_are_refused(tmp_path: Path) -> None:
    (line,) = refusal(tmp_path, "name: x\ntasks: [{input: &a [1, *a]}]\n")
    assert line.endswith(": line 2, column 17: refused: this contains an alias to itself")
    bomb = ["name: x", "tasks:", "  - {input: &a0 [lol, lol, lol, lol, lol, lol, lol, lol]}"]
    bomb += [f"  - {{input: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]}}" for i in range(1, 10)]
    (line,) = refusal(tmp_path, "\n".join(bomb) + "\n")
    assert ": line 10, column 13: refused: over 16,777,216 values with its aliases expanded" in line


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = (
        "name: x\ntasks:\n  - &first {input: 1, resources: {cpus: 2}}\n  - {<<: *first, input: 2}\n"
    )
    spec = load_job(job_file(tmp_path, text))
    assert [t.input for t in derive_tasks(spec)] == [1, 2]
    assert [str(t.need) for t in derive_tasks(spec)] == ["cpus>=2,driver=echo"] * 2


def test_a_missing_file_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(JobSpecError) as caught:
        load_job(path)
    assert str(caught.value) == (
        f"{path}: no such file; pass the path of a job file, like examples/hello.yaml"
    )


# Files both parsers refuse, by kind: YAML's syntax, characters it does not take, what the
# loader refuses (keys twice, aliases, nesting), values their tags cannot take.
BAD_FILES = {
    "unclosed flow": "name: x\ntasks:\n  - {input: [1, 2}\n",
    "indentation": "name: x\ntasks:\n  - input: 1\n   name: y\n",
    "tab": "name: x\ntasks:\n\t- input: 1\n",
    "unclosed quote": 'name: "x\ntasks: []\n',
    "colon in a value": "name: x: y\n",
    "a block text's indentation": "a: |\n  x\n b\n",
    "undefined alias": "name: x\ntasks: [*nope]\n",
    "two documents": "name: x\n---\nname: y\n",
    "text after the document's end": "a: 1\n...\nb: 2\n",
    "unknown escape": 'name: "\\q"\n',
    "YAML 2.0": "%YAML 2.0\n---\na: 1\n",
    "a control character": "name: x\x07\n",
    "a C1 control character": "a: é\x9f\n",
    "a Python tag": "name: !!python/object:os.system x\n",
    "a local tag": "name: !foo x\n",
    "a key twice": "name: x\nname: y\n",
    "an anchor twice": "a: &x 1\nb: &x 2\nc: *x\n",
    "an alias to itself": "name: x\ntasks: [{input: &a [1, *a]}]\n",
    "an alias bomb": "a: &a0 [x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 16)}]\n" for i in range(1, 7)),
    "nested 250 deep": "a: " + "[" * 250 + "]" * 250 + "\n",
    "nested 1,001 deep": "a: " + "[" * 1001 + "]" * 1001 + "\n",  # past libyaml's 1,000
    "a 13th month": "name: x\ntasks: [{input: 2020-13-45}]\n",
    "!!int abc": "name: x\ntasks: [{input: !!int 'abc'}]\n",
    "!!bool maybe": "a: !!bool maybe\n",
    "!!map of a list": "a: !!map [1]\n",
    "!!omap of scalars": "a: !!omap [1, 2]\n",
}


def both_read(text: str) -> tuple[str, str]:
    """What libyaml's parser and PyYAML's make of `text`: its values (repr, so a 1 is not a
    1.0 or a True), or the error's lines."""

    def read(libyaml: bool) -> str:
        try:
            return repr(read_yaml(text, "job.yaml", libyaml=libyaml))
        except JobSpecError as e:
            return str(e)

    return read(True), read(False)


def test_this_pyyaml_reads_job_files_with_libyaml() -> None:
    # The pinned PyYAML's wheels carry libyaml: a build without it reads 4 times as slowly.
    assert LIBYAML
    # and it is libyaml that reads: it refuses an escape PyYAML's parser lets through
    libyaml, pure = both_read('a: "\\ud800"\n')
    assert (
        libyaml
        == "job.yaml: line 1, column 7: not valid YAML: found invalid Unicode character escape code"
    )
    assert pure == repr({"a": "\ud800"})


@pytest.mark.parametrize("name", ["examples", "a generated job"])
def test_both_parsers_read_the_examples_and_a_large_job_alike(name: str) -> None:
    texts = [p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))]
    if name != "examples":
        texts = [job_text(600, varied=True)]
    for text in texts:
        libyaml, pure = both_read(text)
        assert libyaml == pure
        assert "JobSpecError" not in libyaml and libyaml.startswith("{")


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_both_parsers_refuse_a_bad_file_in_the_same_words(name: str) -> None:
    libyaml, pure = both_read(BAD_FILES[name])
    assert libyaml == pure
    assert libyaml.startswith("job.yaml: ") and libyaml.count("\n") <= 1, libyaml


def test_values_their_tags_cannot_take_are_refused_where_they_are_written(tmp_path: Path) -> None:
    (line,) = refusal(tmp_path, "name: x\ntasks:\n  - {input: 2030-13-01}\n")
    assert line.endswith(
        ": line 3, column 13: not valid YAML: '2030-13-01' is not a valid timestamp "
        "(month must be in 1..12)"
    )
    (line,) = refusal(tmp_path, "name: x\ntasks: [{input: !!bool maybe}]\n")
    assert line.endswith(": line 2, column 17: not valid YAML: 'maybe' is not a valid bool")


def test_a_syntax_error_deep_in_a_file_is_worded_as_pythons_parser_words_it() -> None:
    text = job_text(500) + "  - {input: [1, 2}\n"
    with pytest.raises(JobSpecError) as caught:
        read_yaml(text, "job.yaml")
    assert str(caught.value) == (
        "job.yaml: line 1005, column 18: not valid YAML: expected ',' or ']', but got '}'"
    )


def test_without_libyaml_job_files_are_read_by_pythons_parser(tmp_path: Path) -> None:
    """A PyYAML built without libyaml (no wheel for the platform): the same job, the same
    refusal, read by PyYAML's own parser."""
    good, bad = job_file(tmp_path, job_text(20, varied=True)), tmp_path / "bad.yaml"
    bad.write_text(BAD_FILES["a key twice"])
    script = (
        "import sys; sys.modules['yaml._yaml'] = None\n"  # as if libyaml were not there
        "from pathlib import Path\n"
        "from p2psched.scheduler.job import JobSpecError, load_job\n"
        "from p2psched.scheduler.job.loader import LIBYAML\n"
        "print(LIBYAML)\n"
        f"print(len(load_job(Path({str(good)!r})).tasks))\n"
        f"try: load_job(Path({str(bad)!r}))\n"
        "except JobSpecError as e: print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out == [
        "False",
        "20",
        f"{bad}: line 2, column 1: refused: the key 'name' is given twice",
    ]
    assert len(load_job(good).tasks or []) == 20
