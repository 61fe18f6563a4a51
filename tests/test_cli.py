import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from commentdesk.cli import app
from commentdesk.settings import PROJECT_ROOT
from model.artifact import read_manifest

runner = CliRunner()
CONFIG = PROJECT_ROOT / "configs" / "baseline.toml"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["score"],
        ["train"],
        ["evaluate"],
        ["data"],
        ["data", "check"],
        ["data", "labels"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_score_command_writes_output_and_reports_bad_rows(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "hi"}\n{"id": "b", "text": ""}\n', encoding="utf-8")
    output = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, ["score", str(source), "-o", str(output), "--model-dir", str(tiny_model_dir)]
    )
    assert result.exit_code == 1
    assert "scored 1 of 2 rows" in result.output
    assert json.loads(output.read_text())["id"] == "a"
    assert "row" in (tmp_path / "out.jsonl.errors.jsonl").read_text()


def test_score_command_names_the_missing_column(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("remark\nhello\n", encoding="utf-8")
    args = ["score", str(source), "-o", str(tmp_path / "o.csv"), "--model-dir", str(tiny_model_dir)]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 2
    assert "no text column found" in result.output and "--text-column" in result.output
    ok = runner.invoke(app, [*args, "--text-column", "remark"])
    assert ok.exit_code == 0, ok.output
    assert "scored 1 of 1 rows" in ok.output and "text column 'remark'" in ok.output


def test_score_command_writes_beside_the_input_by_default(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "export.tsv.gz"
    source.write_bytes(gzip.compress(b"comment_id\tbody\nc1\thello there\nc2\t\n"))
    result = runner.invoke(app, ["score", str(source), "--model-dir", str(tiny_model_dir)])
    assert result.exit_code == 1, result.output  # one row rejected: its text is empty
    scored = gzip.decompress((tmp_path / "export.scored.tsv.gz").read_bytes()).decode()
    assert scored.splitlines()[1].startswith("c1\thello there\t")
    rejected = (tmp_path / "export.scored.tsv.gz.errors.jsonl").read_text()
    assert '"id": "c2"' in rejected and "text is empty" in rejected
    assert "sentiment:" in result.output and "1 rows rejected" in result.output


def test_score_command_rejects_a_broken_model(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("text\nhello\n", encoding="utf-8")
    args = ["score", str(source), "-o", str(tmp_path / "o.csv"), "--model-dir", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "no manifest.json" in result.output


def test_train_then_evaluate_on_synthetic_data(synthetic_data_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shrink = [
        "features.min_df=1",
        "features.word_max_features=300",
        "features.char_max_features=300",
    ]
    args = ["train", "--config", str(CONFIG), "--data-dir", str(synthetic_data_dir)]
    args += ["--output-dir", str(model_dir), "--set", "version=9.9.9"]
    result = runner.invoke(app, args + [arg for item in shrink for arg in ("--set", item)])
    assert result.exit_code == 0, result.output
    assert read_manifest(model_dir).version == "9.9.9"
    card = tmp_path / "card.md"
    evaluated = runner.invoke(
        app,
        [
            "evaluate", "--model-dir", str(model_dir), "--data-dir", str(synthetic_data_dir),
            "--card", str(card), "--compare", str(model_dir),
        ],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    text = card.read_text()
    assert "tweeteval-offensive/test" in text and "VADER" in text and "alt-profanity-check" in text
    assert "ECE %" in text
    for figure in ("confusion", "reliability"):
        assert (tmp_path / "figures" / f"commentdesk-baseline-{figure}.png").stat().st_size > 1000


def test_faithfulness_reports_every_task_of_the_model(
    tiny_model_dir: Path, synthetic_data_dir: Path
) -> None:
    args = ["faithfulness", "--model-dir", str(tiny_model_dir)]
    result = runner.invoke(app, [*args, "--data-dir", str(synthetic_data_dir), "--sample", "20"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ")][1:]
    tasks = {row.split("|")[1].strip() for row in rows}
    assert tasks == set(read_manifest(tiny_model_dir).tasks)
    assert all("/test |" in row or "/dev |" in row for row in rows)


def test_train_rejects_unknown_override(synthetic_data_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(CONFIG),
            "--data-dir",
            str(synthetic_data_dir),
            "--output-dir",
            str(tmp_path),
            "--set",
            "features.colour=blue",
        ],
    )
    assert result.exit_code == 2
    assert "unknown key" in result.output


def test_data_check_reports_zero_overlap(synthetic_data_dir: Path) -> None:
    result = runner.invoke(app, ["data", "check", "--data-dir", str(synthetic_data_dir)])
    assert result.exit_code == 0, result.output
    assert "total overlap after cleaning: 0" in result.output
    assert "semeval2017" in result.output


def test_data_check_with_missing_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", "--data-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_keys_feedback_and_training_on_feedback(
    tiny_model_dir: Path, synthetic_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from commentdesk.settings import Settings
    from service.app import create_app

    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("COMMENTDESK_DATABASE__URL", db_url)
    monkeypatch.setenv("COMMENTDESK_MODEL_DIR", str(tiny_model_dir))
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    keys = {}
    for role in ("scorer", "moderator"):
        result = runner.invoke(app, ["keys", "create", "--role", role, "--name", f"{role}-cli"])
        assert result.exit_code == 0, result.output
        keys[role] = result.output.strip().rsplit(" ", 1)[1]
    assert runner.invoke(app, ["keys", "create", "--role", "king"]).exit_code == 2
    listed = runner.invoke(app, ["keys", "list"])
    assert "scorer-cli" in listed.output and keys["scorer"] not in listed.output

    with TestClient(create_app(Settings(data_dir=None, state_dir=tmp_path))) as client:
        ingested = client.post(
            "/v1/comments",
            json={
                "comments": [
                    {"source": "t", "external_id": str(i), "text": f"where is my order {i}?"}
                    for i in range(3)
                ]
            },
            headers={"Authorization": f"Bearer {keys['scorer']}"},
        ).json()
        ids = [r["id"] for r in ingested["results"]]
        moderator = {"Authorization": f"Bearer {keys['moderator']}"}
        client.post(f"/v1/queue/{ids[0]}/decision", json={"action": "hide"}, headers=moderator)
        client.post(
            f"/v1/queue/{ids[1]}/decision",
            json={"action": "relabel", "labels": {"sentiment": "negative"}},
            headers=moderator,
        )
        client.post(
            f"/v1/queue/{ids[2]}/decision",
            json={"action": "reply", "reply_text": "DM us"},
            headers=moderator,
        )

    feedback = tmp_path / "feedback.jsonl"
    exported = runner.invoke(app, ["feedback", "export", "-o", str(feedback)])
    assert exported.exit_code == 0 and "wrote 3 labelled rows" in exported.output
    rows = [json.loads(line) for line in feedback.read_text().splitlines()]
    assert {(r["task"], r["label"]) for r in rows} == {
        ("offensive", "offensive"),
        ("sentiment", "negative"),
        ("question", "question"),
    }
    assert all(r["source"] == "moderator:moderator-cli" and r["decided_at"] for r in rows)

    shrink = [
        "features.min_df=1",
        "features.word_max_features=300",
        "features.char_max_features=300",
    ]
    args = [
        "train",
        "--config",
        str(CONFIG),
        "--data-dir",
        str(synthetic_data_dir),
        "--output-dir",
        str(tmp_path / "m"),
    ]
    args += ["--extra-data", str(feedback), *[a for item in shrink for a in ("--set", item)]]
    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    assert "feedback" in read_manifest(tmp_path / "m").training_data
    revoked = runner.invoke(app, ["keys", "revoke", "1"])
    assert revoked.exit_code == 0 and runner.invoke(app, ["keys", "revoke", "1"]).exit_code == 2
