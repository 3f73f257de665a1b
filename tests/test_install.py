"""The install tooling: check-install's parsing and drift checks, TORCH=keep's constraints,
and what `segkit info` says about the environment. (The resolutions themselves need PyPI and
minutes; CI runs them: `make check-install`, `make check-wheel`.)"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_install = _load("check_install")
keep_constraints = _load("keep_constraints")


def _item(name, version, requires=()):
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


def test_pinned_reads_name_version_lines_only(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("# a comment\npip==26.3\nPyYAML==6.0.4  # why\ntyping_extensions==4.16.0\n"
                    "torch>=2.6\n\nfoo ; python_version < '3'\n")
    assert check_install.pinned(path) == {"pip": "26.3", "pyyaml": "6.0.4",
                                          "typing-extensions": "4.16.0"}


def test_torch_pinned_follows_exact_pins_from_torch():
    report = {"install": [
        _item("torch", "2.13.0", ["cuda-toolkit[nvrtc]==13.0.3; platform_system == 'Linux'",
                                  "triton==3.7.1", "sympy>=1.13.3", "filelock"]),
        _item("cuda-toolkit", "13.0.3", ['nvidia-cuda-nvrtc==13.0.88.*; extra == "nvrtc"',
                                         "nvidia-not-installed==1.0"]),
        _item("nvidia-cuda-nvrtc", "13.0.88"),
        _item("triton", "3.7.1"),
        _item("sympy", "1.14.0", ["mpmath==1.3.0"]),  # sympy's own pin is not torch's
        _item("mpmath", "1.3.0"),
        _item("filelock", "4.3.1"),
    ]}
    assert check_install.torch_pinned(report) == {"cuda-toolkit", "nvidia-cuda-nvrtc", "triton"}


def test_torch_pinned_is_empty_for_the_cpu_build():
    report = {"install": [_item("torch", "2.13.0+cpu", ["sympy>=1.13.3", "filelock"]),
                          _item("sympy", "1.14.0"), _item("filelock", "4.3.1")]}
    assert check_install.torch_pinned(report) == set()


def test_conflict_lines_keep_pips_account_and_drop_the_noise():
    out = """Collecting torch==2.13.0
  Downloading torch-2.13.0-cp312-cp312-manylinux_2_28_x86_64.whl (526.6 MB)
ERROR: Cannot install cuda-toolkit==13.0.3 and segkit[dev]==0.1.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    cuda-toolkit 13.0.3 depends on nvidia-cuda-nvrtc==13.0.88.*
    The user requested (constraint) nvidia-cuda-nvrtc==13.5.37

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/
"""
    lines = check_install.conflict_lines(out)
    assert lines[0].startswith("ERROR: Cannot install cuda-toolkit")
    assert "    The user requested (constraint) nvidia-cuda-nvrtc==13.5.37" in lines
    assert not any("Downloading" in ln or "loosen" in ln or "To fix" in ln for ln in lines)
    assert lines[-1].startswith("ERROR: ResolutionImpossible")


def test_pypi_only_env_drops_the_machines_pip_settings(monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/pypi/simple")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/xdg/pip/constraints.txt")
    env = check_install.pypi_only_env()
    assert env["PIP_CONFIG_FILE"] == "/dev/null"
    assert not {"PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"} & set(env)


def test_pypi_only_env_makes_pip_read_no_configuration(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /opt/wheels\nconstraint = /nonexistent.txt\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True, env=check_install.pypi_only_env(), check=True).stdout
    assert "find-links" not in out and "constraint" not in out, out


def test_find_interpreters_finds_the_running_python():
    minor = "%d.%d" % sys.version_info[:2]
    found = check_install.find_interpreters((minor, "2.1"))
    assert "2.1" not in found
    if minor in found:  # this interpreter, or a newer patch release of it
        version = check_install.interpreter_version(found[minor])
        assert version.startswith(minor + ".")


def test_check_install_rejects_an_unknown_stack(capsys):
    with pytest.raises(SystemExit):
        check_install.main(["--stacks", "mmseg+nope", "--python", sys.executable])
    assert "unknown stack 'nope'" in capsys.readouterr().err


def test_keep_constraints_drops_what_is_installed_and_verifies(tmp_path, monkeypatch):
    have = {"torch": "2.12.1+cu128", "numpy": "2.1.0", "pip": "24.0"}
    monkeypatch.setattr(keep_constraints, "installed", lambda: dict(have))
    src, dst = tmp_path / "constraints.txt", tmp_path / "keep.txt"
    src.write_text("pip==26.3\nnumpy==2.4.6\ntorch==2.13.0\nmmengine==0.10.7\n# note\n")
    assert keep_constraints.write(src, dst) == 0
    text = dst.read_text()
    assert text.splitlines()[0] == "# kept: pip==24.0 numpy==2.1.0 torch==2.12.1+cu128"
    assert "mmengine==0.10.7" in text and "torch==2.13.0" not in text
    assert "numpy==2.4.6" not in text
    assert keep_constraints.verify(dst) == 0
    have["torch"] = "2.13.0"  # pip replaced the user's torch
    assert keep_constraints.verify(dst) == 1


def test_keep_constraints_refuses_without_torch(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(keep_constraints, "installed", lambda: {"numpy": "2.4.6"})
    src = tmp_path / "constraints.txt"
    src.write_text("torch==2.13.0\n")
    assert keep_constraints.write(src, tmp_path / "keep.txt") == 1
    assert "sees no torch" in capsys.readouterr().err


def test_torch_build_reads_torch_version_py(tmp_path, monkeypatch):
    from segkit import _env

    pkg = tmp_path / "torch"
    pkg.mkdir()
    monkeypatch.setattr(_env, "_package_dir", lambda module: pkg)
    (pkg / "version.py").write_text("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n"
                                    "hip: Optional[str] = None\n")
    assert _env.torch_build() == "2.13.0+cpu, CPU build"
    (pkg / "version.py").write_text("__version__ = '2.13.0'\ncuda: Optional[str] = '13.0'\n")
    assert _env.torch_build() == "2.13.0, CUDA 13.0 build"


def test_mmseg_line_names_the_installed_line(monkeypatch, tmp_path):
    from segkit import _env

    versions = {"onedl-mmsegmentation": "1.4.2", "onedl-mmengine": "0.10.12",
                "onedl-mmcv": "2.3.6"}
    monkeypatch.setattr(_env, "version", versions.get)
    monkeypatch.setattr(_env, "_package_dir", lambda module: tmp_path)
    text = _env.mmseg_line()
    assert text.startswith("onedl: onedl-mmsegmentation 1.4.2, onedl-mmengine 0.10.12, "
                           "onedl-mmcv 2.3.6")
    assert "without compiled ops" in text
    (tmp_path / "_ext.cpython-312-x86_64-linux-gnu.so").write_bytes(b"")
    assert "with compiled ops" in _env.mmseg_line()
    versions.update({"mmsegmentation": "1.2.2", "mmengine": "0.10.7", "mmcv-lite": "2.1.0"})
    assert "both lines are installed" in _env.mmseg_line()
    monkeypatch.setattr(_env, "version", {}.get)
    assert _env.mmseg_line() is None


def test_info_names_python_torch_line_and_build():
    from click.testing import CliRunner

    from segkit.cli import main

    result = CliRunner().invoke(main, ["info", "--fast"])
    assert result.exit_code == 0, result.output
    head = result.output.splitlines()[:5]
    assert head[0].startswith("segkit ") and "on Python %d.%d" % sys.version_info[:2] in head[0]
    assert head[1].startswith("  torch ") and head[2].startswith("  mmseg line ")
    assert head[3].startswith("  extension ") and head[4].startswith("  CUDA sources ")


# --- CI (.ci/run) and the Makefile targets it calls ------------------------------------------

CI_STEPS = ["system-deps", "check-install", "test", "docs", "check-wheel", "install-py312",
            "test-py312", "install-onedl", "test-onedl"]


def _fake_make(tmp_path, fail=None):
    """A `make` on PATH that logs its targets and their overlap instead of running them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "make.log"
    (bin_dir / "make").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "start $* $(date +%s.%N)" >> {log}\n'
        "sleep 0.3\n"
        f'echo "end $* $(date +%s.%N)" >> {log}\n'
        f'[ "$1" = "{fail or "-"}" ] && exit 2\n'
        "exit 0\n")
    (bin_dir / "make").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CI_POLL": "0.1",
           "TMPDIR": str(tmp_path)}
    return env, log


def _events(log):
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(kind, target, float(t)) for kind, target, t in rows]


def test_ci_runs_every_step_in_lanes_and_prints_each_time(tmp_path):
    env, log = _fake_make(tmp_path)
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = _events(log)
    started = [target for kind, target, _ in events if kind == "start"]
    assert sorted(started) == sorted(CI_STEPS)  # each once; `make test` is one of them
    t = {(kind, target): when for kind, target, when in events}
    # chromium (system-deps) before every lane, since both suites need it
    for step in CI_STEPS[1:]:
        assert t["end", "system-deps"] <= t["start", step], step
    # the lanes: test -> docs -> check-wheel; each venv's suite after its install
    assert t["end", "test"] <= t["start", "docs"] and t["end", "docs"] <= t["start", "check-wheel"]
    assert t["end", "install-py312"] <= t["start", "test-py312"]
    assert t["end", "install-onedl"] <= t["start", "test-onedl"]
    # and the lanes overlap: the other venvs' installs and check-install run beside `make test`
    for other in ("install-py312", "install-onedl", "check-install"):
        assert t["start", other] < t["end", "test"], other
    summary = proc.stdout.split("== CI summary", 1)[1]
    for step in CI_STEPS:
        assert re.search(rf"make {step}: rc 0, \d+ s", summary), (step, summary)


def test_ci_fails_when_a_step_fails_and_says_which(tmp_path):
    env, log = _fake_make(tmp_path, fail="install-py312")
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    summary = proc.stdout.split("== CI summary", 1)[1]
    assert re.search(r"make install-py312: rc 2", summary), summary
    started = [target for kind, target, _ in _events(log) if kind == "start"]
    assert "test-py312" not in started


def _make_n(*args):
    return subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True,
                          text=True, check=True).stdout


def test_ci_targets_exist_and_docs_is_strict():
    for target in CI_STEPS:
        _make_n(target, "PYTHON312=python3.12")
    docs = _make_n("docs", "VENV=/nonexistent-venv")
    assert re.search(r"-m sphinx -W -n .*-b html docs docs/_build/html", docs), docs
    py312 = _make_n("install-py312", "PYTHON312=/opt/py312")
    assert "install PYTHON=/opt/py312 VENV=.venv312 PYPI_ONLY=1" in py312


def test_make_install_takes_torch_first_and_locks_the_editable_build():
    out = _make_n("install", "VENV=/nonexistent-venv")
    lines = out.splitlines()
    torch = next(i for i, ln in enumerate(lines) if ln.endswith("-c constraints.txt torch"))
    editable = next(i for i, ln in enumerate(lines) if "--no-build-isolation -e" in ln)
    assert torch < editable
    assert lines[editable].startswith("flock .segkit-build.lock ")
    base = _make_n("install", "VENV=/nonexistent-venv", "EXTRAS=")
    assert not any(ln.endswith(" torch") for ln in base.splitlines())


def test_docs_extra_is_pinned_and_resolved_by_check_install():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    pins = check_install.pinned(ROOT / "constraints.txt")
    for req in extras["docs"]:
        assert check_install.requirement_name(req) in pins, req
    assert "docs" in check_install.STACKS["mmseg"].split(",")
