"""The main job: execute every notebook with papermill at its default parameters and summarise the results."""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from grw.io import text_table

__all__ = ["run_notebook", "run_tour", "summary_rows"]


def run_notebook(notebook: Path, out_dir: Path, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute ``notebook`` into ``out_dir/<name>.ipynb`` with ``out_dir`` (and ``parameters``) injected; return its results.json.

    The kernel runs in the notebook's folder, as it does in JupyterLab.
    """
    import papermill

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebook),
        str(out_dir / notebook.name),
        parameters={**(parameters or {}), "out_dir": str(out_dir)},
        cwd=str(notebook.resolve().parent),
        kernel_name="python3",
        progress_bar=False,
    )
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


def run_tour(notebooks: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Run every ``*.ipynb`` in ``notebooks`` (sorted) into ``out/<name>/`` and print the summary table."""
    paths = sorted(Path(notebooks).glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks (*.ipynb) in {notebooks}")
    results: dict[str, dict[str, Any]] = {}
    for path in paths:
        started = time.perf_counter()
        print(f"running {path.name} …", flush=True)
        results[path.stem] = run_notebook(path, Path(out) / path.stem)
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\nSummary of {len(paths)} notebooks (executed notebooks, figures and results.json under {out}/)")
    print(text_table(("notebook", "measure", "value"), summary_rows(results), align="lll"))
    return results
