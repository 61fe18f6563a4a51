"""Execute the notebooks against the data directory so they never rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from commentdesk.settings import PROJECT_ROOT

pytestmark = pytest.mark.data


@pytest.mark.parametrize("name", ["01-data-overview.ipynb"])
def test_notebook_executes(name: str, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMENTDESK_DATA_DIR", str(real_data_dir))
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / name, as_version=4)
    resources = {"metadata": {"path": str(PROJECT_ROOT)}}
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources=resources).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook drew no plot"
