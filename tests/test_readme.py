"""The README's Python examples run as written (in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[index]
    if index > 0 and "Task(" in code and "import" not in code.split("\n")[0]:
        code = (
            "from omniq.backend.file import FileBackend\nfrom omniq.models.task import Task\n"
            + code
        )
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "readme_example"})
