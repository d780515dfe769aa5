"""The ``python -m grw`` command line: defaults in every --help, one line for every error, notebook parameters checked."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

import grw.tour
from grw.__main__ import build_parser, main
from grw.io import UnreadableCheckpoint
from grw.tour import NotebookError, check_parameters, parse_value, run_notebook
from grw.train import TrainingStopped

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grw", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def all_parsers(parser: argparse.ArgumentParser, name: str = "python -m grw"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from all_parsers(sub, f"{name} {command}")


def test_every_help_shows_the_default_of_every_option(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    parsers = dict(all_parsers(build_parser()))
    assert {"python -m grw bench", "python -m grw kinetics synth", "python -m grw tour", "python -m grw train kinetics"} <= set(parsers)
    for name, parser in parsers.items():
        lines = parser.format_help().splitlines() + [""]
        for action in parser._actions:
            if not action.option_strings or action.required or action.default is argparse.SUPPRESS:
                continue
            at = next(i for i, line in enumerate(lines) if line.lstrip().startswith(action.option_strings[0]))
            entry = lines[at] + (lines[at + 1] if lines[at + 1].startswith(" " * 20) else "")  # a long option: help below
            assert f"(default: {action.default})" in entry, (name, action.dest)


@pytest.mark.parametrize(
    "error",
    [
        OSError(30, "Read-only file system"),
        ValueError("expected a positive number\nof frames"),
        TrainingStopped("the training loss became nan"),
        UnreadableCheckpoint("checkpoint.pt is truncated or corrupt"),
        NotebookError("01.ipynb stopped in cell [3]"),
    ],
)
def test_a_command_reports_an_error_in_one_line(error, monkeypatch):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(grw.tour, "run_tour", fail)
    with pytest.raises(SystemExit) as stopped:
        main(["tour"])
    line = stopped.value.code
    assert isinstance(line, str) and line.startswith("error: ") and "\n" not in line
    assert line.removeprefix("error: ") == " ".join(str(error).split())


def test_unwritable_folders_and_missing_devices_are_one_line_without_a_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    synth = run_cli("kinetics", "synth", str(blocker / "synth"), "--classes", "2", "--train-per-class", "1", "--val-per-class", "1")
    bench = run_cli("bench", "loss", "--device", "foo")
    for done, expected in [(synth, f"{blocker}'"), (bench, "unknown device 'foo': expected cpu, cuda or cuda:N")]:
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and expected in done.stderr
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="device 'cuda' asked for, but torch sees no CUDA device; use --device cpu"):
            main(["bench", "loss", "--device", "cuda"])


def test_check_parameters_names_the_parameter_the_type_and_the_value():
    values = {"T": 5, "lam": 1, "seeds": [0, 1], "root": None, "amp": "bf16", "full": False, "synthetic": {"classes": 4}}
    check_parameters(values, T=int, lam=float, seeds=list[int], root=str | None, full=bool, synthetic=dict[str, int])
    for wrong, expected, message in [
        ({"T": "five"}, {"T": int}, "parameter T must be int, got 'five' (str)"),
        ({"T": True}, {"T": int}, "parameter T must be int, got True (bool)"),
        ({"lam": True}, {"lam": float}, "parameter lam must be float, got True (bool)"),
        ({"seeds": [0, "1"]}, {"seeds": list[int]}, "parameter seeds must be list[int], got [0, '1'] (list)"),
        ({"root": 3}, {"root": str | None}, "parameter root must be str | None, got 3 (int)"),
        ({"shape": (2, 3.0)}, {"shape": tuple[int, ...]}, "parameter shape must be tuple[int, ...], got (2, 3.0) (tuple)"),
    ]:
        with pytest.raises(TypeError) as refused:
            check_parameters(wrong, **expected)
        assert str(refused.value) == message
    with pytest.raises(NameError, match="parameter steps is not defined"):
        check_parameters(values, steps=int)
    assert [parse_value(text) for text in ("5", "0.1", "True", "[0, 1]", "cuda", "a0-stream")] == [5, 0.1, True, [0, 1], "cuda", "a0-stream"]


@pytest.fixture
def notebooks(tmp_path) -> Path:
    """A folder with one small notebook: parameters T and out_dir, their check, and a results.json."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    cells = [
        nbformat.v4.new_code_cell('T = 5\nout_dir = "runs/tiny"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from grw.tour import check_parameters\ncheck_parameters(globals(), T=int, out_dir=str)"),
        nbformat.v4.new_code_cell('import json, pathlib\npathlib.Path(out_dir, "results.json").write_text(json.dumps({"T": T}))'),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}, "language_info": {"name": "python"}})
    nbformat.write(notebook, folder / "tiny.ipynb")
    return folder


def test_notebook_parameters_are_declared_and_of_their_type(notebooks, tmp_path):
    notebook = notebooks / "tiny.ipynb"
    with pytest.raises(ValueError, match="tiny.ipynb has no parameter stepz; it declares T, out_dir"):
        run_notebook(notebook, tmp_path / "misspelled", {"stepz": 50})
    assert not (tmp_path / "misspelled").exists()  # refused before it ran
    with pytest.raises(SystemExit, match="error: no notebook in .* has a parameter stepz"):
        main(["tour", "--notebooks", str(notebooks), "--out", str(tmp_path / "tour"), "-p", "stepz", "50"])

    with pytest.raises(ValueError, match=r"tiny.ipynb: parameter T = 'five' \(str\): expected the type of its default 5 \(int\)"):
        run_notebook(notebook, tmp_path / "typed", {"T": "five"})
    assert not (tmp_path / "typed").exists()
    import papermill  # plain papermill has no such check: the notebook's own first cell stops it

    with pytest.raises(papermill.PapermillExecutionError, match="parameter T must be int, got 'five' \\(str\\)"):
        papermill.execute_notebook(str(notebook), str(tmp_path / "typed.ipynb"), parameters={"T": "five"},
                                   kernel_name="python3", progress_bar=False)
    with pytest.raises(papermill.PapermillExecutionError, match="parameter stepz was passed, but this notebook has no such"):
        papermill.execute_notebook(str(notebook), str(tmp_path / "misspelled.ipynb"), parameters={"stepz": 50},
                                   kernel_name="python3", progress_bar=False)  # papermill itself only warns

    main(["tour", "--notebooks", str(notebooks), "--out", str(tmp_path / "tour"), "-p", "T", "3"])
    assert json.loads((tmp_path / "tour" / "tiny" / "results.json").read_text()) == {"T": 3}

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match=r"error: \[Errno \d+\] .*a-file"):
        main(["tour", "--notebooks", str(notebooks), "--out", str(blocker / "tour")])


def test_tour_aims_parameters_and_checks_them_all_before_the_first_notebook(notebooks, tmp_path):
    other = nbformat.read(notebooks / "tiny.ipynb", as_version=4)
    other.cells[0].source = "T = 7\ndevice = 'cpu'\nout_dir = 'runs/other'"
    nbformat.write(other, notebooks / "02_other.ipynb")
    (notebooks / "tiny.ipynb").rename(notebooks / "01_tiny.ipynb")
    out = tmp_path / "tour"
    refusals = {
        ("03:T", "4"): "parameter 03:T: '03' must start the name of exactly one notebook, of 01_tiny, 02_other",
        ("0:T", "4"): "parameter 0:T: '0' must start the name of exactly one notebook",
        ("01:device", "cpu"): "01_tiny.ipynb has no parameter device; it declares T, out_dir",
        ("T", "4.5"): "01_tiny.ipynb: parameter T = 4.5 \\(float\\): expected the type of its default 5 \\(int\\)",
        ("02:device", "tpu"): "02_other.ipynb: parameter device = 'tpu': unknown device 'tpu': expected cpu, cuda or cuda:N",
    }
    if not torch.cuda.is_available():
        refusals[("device", "cuda")] = "02_other.ipynb: parameter device = 'cuda': .*torch sees no CUDA device"
    for (name, value), message in refusals.items():
        with pytest.raises(SystemExit, match=f"error: {message}"):
            main(["tour", "--notebooks", str(notebooks), "--out", str(out), "-p", name, value])
        assert not out.exists()  # nothing ran
    main(["tour", "--notebooks", str(notebooks), "--out", str(out), "-p", "T", "3", "-p", "02:T", "4"])
    assert json.loads((out / "01_tiny" / "results.json").read_text()) == {"T": 3}
    assert json.loads((out / "02_other" / "results.json").read_text()) == {"T": 4}  # the aimed value wins there


def test_a_parameters_line_papermill_cannot_read_is_named(tmp_path):
    import nbformat

    from grw.tour import notebook_parameters

    cell = nbformat.v4.new_code_cell("T = 5\nseeds = [0, 1]  # some of `seeds`: λ = 0 reuses", metadata={"tags": ["parameters"]})
    path = tmp_path / "bad.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                                   "language": "python"}}), path)
    with pytest.raises(ValueError, match="bad.ipynb: papermill cannot read the line of parameter seeds"):
        notebook_parameters(path)


@pytest.mark.parametrize("notebook", sorted(Path(__file__).resolve().parents[1].joinpath("notebooks").glob("*.ipynb")),
                         ids=lambda path: path.stem)
def test_every_notebook_declares_what_its_parameters_cell_assigns_and_checks_them_all(notebook):
    """papermill reads every parameter, and the notebook's check_parameters call types each (so a misspelled one fails)."""
    import ast

    from grw.tour import notebook_parameters

    declared = notebook_parameters(notebook)
    assert "out_dir" in declared
    calls = [node for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code"
             for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "check_parameters"]
    assert len(calls) == 1 and {keyword.arg for keyword in calls[0].keywords} == set(declared)


@pytest.mark.parametrize("command", [["bench", "loss"], ["kinetics", "evaluate", "--checkpoint", "missing.pt", "--root", "r",
                                                          "--preset", "a0s"]])
def test_json_paths_are_checked_before_any_work(command, tmp_path, monkeypatch):
    import grw.bench

    monkeypatch.setattr(grw.bench, "bench_loss", lambda **kwargs: pytest.fail("measured before the --json path was checked"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target, message in ((tmp_path, "is a folder: give a file name"), (blocker / "out.json", "a-file is a file, not a folder")):
        with pytest.raises(SystemExit) as refused:
            main([*command, "--json", str(target)])
        assert str(refused.value.code).startswith("error: the --json file") and message in str(refused.value.code)


@pytest.mark.parametrize(("argv", "message"), [
    (["kinetics", "synth", "OUT", "--classes", "1000000000"], "expected 2 to 1,000 classes"),
    (["kinetics", "synth", "OUT", "--train-per-class", "0"], "expected 2 to 1,000 classes, 1 to 10,000 train"),
    (["kinetics", "evaluate", "--checkpoint", "c.pt", "--root", "r", "--preset", "a0s", "--batch-size", "0"],
     "expected a batch size from 1 to 4,096 and 0 to 256 workers, got 0 and 4"),
    (["kinetics", "evaluate", "--checkpoint", "c.pt", "--root", "r", "--preset", "a0s", "--workers", "100000"],
     "got 16 and 100000"),
])
def test_kinetics_commands_bound_their_sizes_before_any_work(argv, message, tmp_path):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert str(refused.value.code).startswith("error: ") and message in str(refused.value.code)
    assert not (tmp_path / "out").exists()
