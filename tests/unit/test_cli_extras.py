"""The human-facing commands' libraries (rich, matplotlib) are the optional `report` extra, left out
of the operator image: without them a command says which extra it needs instead of a traceback."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

import pytest

from gpufleet import cli


class NotInstalled(importlib.abc.MetaPathFinder):
    """Makes a package look uninstalled, as in the operator image."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] == self.package:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@pytest.mark.parametrize("argv", [["status"], ["report", "--spec", "missing.yaml"]])
def test_a_missing_extra_is_named(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    for name in [m for m in sys.modules if m == "rich" or m.startswith("rich.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [NotInstalled("rich"), *sys.meta_path])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"gpufleet {argv[0]} needs rich" in err and "pip install 'gpufleet[report]'" in err


def test_other_missing_modules_still_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the extra's modules are explained away; a broken install still fails loudly."""
    def broken(args: object) -> int:
        raise ModuleNotFoundError("No module named 'kopf'", name="kopf")

    monkeypatch.setattr(cli, "_operator", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["operator"])
