"""The two set-up routes agree and the command line answers."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_this_package_from_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11" and project["requires-python"].startswith(">=3.11")
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert len(pip) == 1, "environment.yml must install the package only; its dependencies live in pyproject.toml"
    extras = re.fullmatch(r"--editable \.\[([\w,]+)\]", pip[0]).group(1).split(",")
    assert set(extras) == set(project["optional-dependencies"])
    # nothing installed by conda but python and pip, so the two cannot drift apart
    assert {d.split("=")[0] for d in deps if isinstance(d, str)} == {"python", "pip"}


def test_pins_keep_the_torch_on_disk():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps and "pytorchvideo==0.1.5" in deps


def test_makefile_targets_and_ci_use_the_readme_commands():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("tour:", "test:", "lab:"):
        assert target in makefile
    readme = (ROOT / "README.md").read_text()
    assert "make tour" in readme and "make test" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"


def test_command_line_help():
    out = subprocess.run([sys.executable, "-m", "grw", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("bench", "kinetics", "tour"):
        assert command in out
    bad = subprocess.run([sys.executable, "-m", "grw", "bench", "nothing"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_every_test_the_readme_cites_for_a_guarantee_exists():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### What the engine and the commands guarantee"):]
    section = section[: section.index("\n## ")]
    cited, module = [], None
    for match in re.finditer(r"`(?:(test_\w+\.py))?::(test_[\w*]+)`", section):
        module = match.group(1) or module
        cited.append((module, match.group(2)))
    assert len(cited) >= 15
    for module, name in cited:
        pattern = "def " + name.replace("*", r"\w*") + r"\("
        assert re.search(pattern, (ROOT / "tests" / module).read_text()), f"{module}::{name}"
