"""The main job: execute every notebook with papermill (at its default parameters, or those given) and summarise the results.

:func:`check_parameters` is what a notebook's cell after ``parameters`` calls, so that a value of
the wrong type (``papermill -p T five``) stops the notebook at once with a message naming it.
"""

from __future__ import annotations

import ast
import json
import math
import statistics
import time
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from grw.io import text_table

__all__ = ["NotebookError", "check_parameters", "check_tour_parameters", "notebook_parameters", "parse_value", "run_notebook",
           "run_tour", "summary_rows"]


class NotebookError(RuntimeError):
    """A notebook stopped with an error in one of its cells (the executed notebook shows the traceback)."""


def _matches(value: Any, expected: Any) -> bool:
    """Whether ``value`` is of the type ``expected`` (a class, ``X | None``, ``Literal``, ``list[X]``, ``tuple[X, ...]``, ``dict[K, V]``).

    An int is a float, as in Python's numeric tower; a bool is not an int.
    """
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is Any:
        return True
    if expected is None or expected is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(_matches, value, args))
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected: Any) -> str:
    return expected.__name__ if isinstance(expected, type) else str(expected).replace("typing.", "")


def check_parameters(values: Mapping[str, Any], **expected: Any) -> None:
    """Raise a ``TypeError`` naming the parameter, its type and the value unless each ``values[name]`` is of type ``expected[name]``.

    A notebook calls ``check_parameters(globals(), T=int, lam=float, seeds=list[int], out_dir=str)`` right
    after its ``parameters`` cell. A type is a class, ``X | None``, ``Literal[...]``, ``list[X]``,
    ``tuple[X, ...]`` or ``dict[K, V]``; an int passes for a float, a bool does not pass for an int. Under IPython, a
    name that papermill injected (``papermill -p NAME VALUE``) and that is not in ``expected`` is an error too: plain
    papermill only warns about a misspelled parameter and runs at the defaults.
    """
    passed = _injected_names(values.get("In"))
    unknown = sorted(passed - set(expected))
    if unknown:
        raise NameError(f"parameter {', '.join(unknown)} was passed, but this notebook has no such parameter; it has "
                        f"{', '.join(expected)}")
    for name, kind in expected.items():
        if name not in values:
            raise NameError(f"parameter {name} is not defined: expected it in the parameters cell")
        if not _matches(values[name], kind):
            value = values[name]
            raise TypeError(f"parameter {name} must be {_type_name(kind)}, got {value!r} ({type(value).__name__})")


def _injected_names(history: Any) -> set[str]:
    """The names assigned by the cells papermill injected (they start with its ``# Parameters`` line) among the executed
    cell sources ``history`` (IPython's ``In``); empty outside IPython."""
    if not isinstance(history, list):
        return set()
    names: set[str] = set()
    for source in history:
        if isinstance(source, str) and source.lstrip().startswith("# Parameters\n"):
            try:
                body = ast.parse(source).body
            except SyntaxError:
                continue
            names |= {target.id for node in body if isinstance(node, ast.Assign) for target in node.targets
                      if isinstance(target, ast.Name)}
    return names


def parse_value(text: str) -> Any:
    """A parameter value from the command line: a Python literal (``5``, ``0.1``, ``True``, ``[0, 1]``), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """The parameters the ``parameters`` cell of ``notebook`` declares, name → default value (``None`` where the default
    is not a literal).

    Read by papermill; a name the cell assigns but papermill cannot read (it would then refuse the parameter, or
    silently not set it) is an error naming it.
    """
    import nbformat
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    cells = [cell for cell in nbformat.read(notebook, as_version=4).cells
             if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])]
    assigned = [target.id for cell in cells for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)]
    unread = [name for name in assigned if name not in declared]
    if unread:
        raise ValueError(f"{notebook.name}: papermill cannot read the line of parameter {', '.join(unread)} in its "
                         "parameters cell (one `name = value  # comment` per line)")

    def default(text: str) -> Any:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None

    return {name: default(info["default"]) for name, info in declared.items()}


def run_notebook(notebook: Path, out_dir: Path, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute ``notebook`` into ``out_dir/<name>.ipynb`` with ``out_dir`` (and ``parameters``) injected; return its results.json.

    The kernel runs in the notebook's folder, as it does in JupyterLab. A parameter the notebook does
    not declare, or of another type than its default, is refused before it runs (``ValueError``); an error in a cell
    raises :class:`NotebookError`.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    declared = notebook_parameters(notebook)
    unknown = sorted(set(parameters or {}) - set(declared))
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter {', '.join(unknown)}; it declares {', '.join(declared)}")
    check_tour_parameters({notebook: declared}, parameters or {})
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    try:
        papermill.execute_notebook(
            str(notebook),
            str(executed),
            parameters={**(parameters or {}), "out_dir": str(out_dir)},
            cwd=str(notebook.resolve().parent),
            kernel_name="python3",
            progress_bar=False,
        )
    except PapermillExecutionError as error:
        raise NotebookError(f"{notebook.name} stopped in cell [{error.exec_count}]: {error.ename}: {error.evalue} "
                            f"(the executed notebook, with the traceback: {executed})") from error
    results_file = out_dir / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{notebook.name} ran but wrote no {results_file}")
    return json.loads(results_file.read_text())


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [leaf for key, v in value.items() for leaf in _leaves(v, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        spread = f" ± {statistics.stdev(value):.3g}" if len(value) > 1 else ""
        return [(prefix, f"{statistics.fmean(value):.4g}{spread}  (n={len(value)})")]
    if isinstance(value, float) and math.isfinite(value):
        return [(prefix, f"{value:.4g}")]
    if isinstance(value, (int, str, bool)):
        return [(prefix, str(value))]
    return []


def summary_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(notebook, metric, value)`` rows from each results.json: its ``summary`` entry if it has one, else every number (lists as mean ± std)."""
    return [
        (name, key, value)
        for name, result in results.items()
        for key, value in _leaves(result.get("summary", result))
    ]


def _same_kind(value: Any, default: Any) -> bool:
    """Whether ``value`` can stand for a parameter whose default is ``default`` (any value where that is ``None``)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_tour_parameters(declared: Mapping[Path, Mapping[str, Any]], parameters: Mapping[str, Any]) -> dict[Path, dict[str, Any]]:
    """Each notebook's own parameters, checked before any notebook runs.

    A key ``NAME`` goes to every notebook that declares it; ``NB:NAME`` to the one notebook whose name starts with ``NB``
    (e.g. ``03:preset``), and wins over ``NAME`` there. Refused with one line: a name no notebook (or not the aimed one)
    declares, an ``NB`` that names no notebook or several, a value of another type than the parameter's default, a
    ``device`` (or ``devices``) this machine does not have.
    """
    from grw.train import resolve_device

    own: dict[Path, dict[str, Any]] = {path: {} for path in declared}
    aimed: list[tuple[Path, str, Any]] = []
    for key, value in parameters.items():
        prefix, _, name = key.rpartition(":")
        if not prefix:
            readers = [path for path, names in declared.items() if name in names]
            if not readers:
                folders = sorted({str(path.parent) for path in declared})
                raise ValueError(f"no notebook in {', '.join(folders)} has a parameter {name}")
            for path in readers:
                own[path][name] = value
            continue
        matches = [path for path in declared if path.stem.startswith(prefix)]
        if len(matches) != 1:
            raise ValueError(f"parameter {key}: {prefix!r} must start the name of exactly one notebook, "
                             f"of {', '.join(path.stem for path in declared)}")
        if name not in declared[matches[0]]:
            raise ValueError(f"{matches[0].name} has no parameter {name}; it declares {', '.join(declared[matches[0]])}")
        aimed.append((matches[0], name, value))
    for path, name, value in aimed:
        own[path][name] = value
    for path, values in own.items():
        for name, value in values.items():
            default = declared[path][name]
            if not _same_kind(value, default):
                raise ValueError(f"{path.name}: parameter {name} = {value!r} ({type(value).__name__}): expected the "
                                 f"type of its default {default!r} ({type(default).__name__})")
            if name in ("device", "devices") and value is not None:
                for device in [value] if isinstance(value, str) else value:
                    try:
                        resolve_device(device)
                    except ValueError as error:
                        raise ValueError(f"{path.name}: parameter {name} = {value!r}: {error}") from None
    return own


def run_tour(notebooks: Path, out: Path, parameters: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Run every ``*.ipynb`` in ``notebooks`` (sorted) into ``out/<name>/`` and print the summary table.

    ``parameters`` are routed and checked by :func:`check_tour_parameters` before the first notebook runs.
    """
    paths = sorted(Path(notebooks).glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks (*.ipynb) in {notebooks}")
    own = check_tour_parameters({path: notebook_parameters(path) for path in paths}, parameters or {})
    Path(out).mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for path in paths:
        started = time.perf_counter()
        print(f"running {path.name} …", flush=True)
        results[path.stem] = run_notebook(path, Path(out) / path.stem, own[path])
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\nSummary of {len(paths)} notebooks (executed notebooks, figures and results.json under {out}/)")
    print(text_table(("notebook", "measure", "value"), summary_rows(results), align="lll"))
    return results
