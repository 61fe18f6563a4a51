"""The README's examples are run, so they stay true."""

import json
import re
import shlex

from fastapi.testclient import TestClient

from commentdesk.settings import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def test_quick_start_has_exactly_the_two_commands() -> None:
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", README, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make serve", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_curl_example_works(client: TestClient) -> None:
    block = re.search(r"```bash\n(curl .*?)```", README, re.S)
    assert block is not None
    key = client.headers["Authorization"].removeprefix("Bearer ")
    args = shlex.split(block.group(1).replace("\\\n", " ").replace("$KEY", key))
    body = json.loads(args[args.index("-d") + 1])
    path = args[2].split("8000", 1)[1]
    headers = dict(h.split(": ", 1) for h in (args[i + 1] for i, a in enumerate(args) if a == "-H"))
    del client.headers["Authorization"]
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["results"][0]["id"] == "c1"
