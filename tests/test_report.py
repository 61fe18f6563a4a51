"""The analytics report: exact numbers from small scored exports (CSV, JSONL, Parquet) and from
the database (SQLite and PostgreSQL), bad input, the /v1/stats report, the self-contained HTML
and its rendering in Chromium."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import shlex
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import Browser, ConsoleMessage
from typer.testing import CliRunner

from commentdesk.cli import app
from commentdesk.settings import PROJECT_ROOT
from model.tasks import LABELS, Task
from service.analytics import (
    FilterError,
    ReportInputError,
    build_report,
    count_terms,
    load_database,
    load_export,
    make_filters,
    parse_times,
)
from service.auth import Role
from service.db.tables import Comment, Decision
from service.report import files_dir, write_report
from tests.conftest import Api
from tests.test_ui import browser  # noqa: F401  (the Chromium fixture)

runner = CliRunner()

# id, time, brand, likes, replied_at, text, sentiment, P(negative), offensive, hate, question
ROWS: list[tuple[Any, ...]] = [
    ("1", "2026-11-01T10:00:00Z", "acme", "5", "", "My parcel never arrived, terrible service",
     "negative", 0.9, "not-offensive", "not-hate", "not-question"),
    ("2", "2026-11-01T11:00:00Z", "acme", "1", "2026-11-01T11:30:00Z",
     "Where is my parcel?? @acme https://t.co/x1", "negative", 0.7, "not-offensive", "not-hate",
     "question"),
    ("3", "2026-11-01 12:00:00", "beta", "0", "", "Terrible service &amp; 100 times worse",
     "negative", 0.8, "offensive", "hate", "not-question"),
    ("4", "2026-11-02T10:00:00+01:00", "beta", "2", "2026-11-02T12:00:00Z",
     "How do I reset my password?", "neutral", 0.1, "not-offensive", "not-hate", "question"),
    ("5", "1793613600", "acme", "50", "", "Love the new app", "positive", 0.02,
     "not-offensive", "not-hate", "not-question"),
    ("6", "2026-11-02T11:00:00Z", "acme", "3", "", "Can I change my parcel address?", "neutral",
     0.2, "not-offensive", "not-hate", "question"),
]  # fmt: skip
HEADER = ["id", "created_at", "brand", "likes", "replied_at", "text"]
HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> costs $5$'


def score_values(row: tuple[Any, ...]) -> dict[str, Any]:
    """The label and score columns of a row, as `commentdesk score` writes them."""
    sentiment, negative, offensive, hate, question = row[6:]
    rest = (1 - negative) / 2
    probabilities = {
        Task.SENTIMENT: {"negative": negative, "neutral": rest, "positive": rest},
        Task.OFFENSIVE: {"not-offensive": 0.4, "offensive": 0.6}
        if offensive == "offensive"
        else {"not-offensive": 0.9, "offensive": 0.1},
        Task.HATE: {"not-hate": 0.3, "hate": 0.7}
        if hate == "hate"
        else {"not-hate": 0.95, "hate": 0.05},
        Task.QUESTION: {"not-question": 0.2, "question": 0.8}
        if question == "question"
        else {"not-question": 0.9, "question": 0.1},
    }
    if sentiment == "positive":
        probabilities[Task.SENTIMENT] = {"negative": negative, "neutral": 0.1, "positive": 0.88}
    labels = {Task.SENTIMENT: sentiment, Task.OFFENSIVE: offensive, Task.HATE: hate}
    labels[Task.QUESTION] = question
    return {"labels": labels, "scores": probabilities}


def flat_record(row: tuple[Any, ...], header: list[str] = HEADER) -> dict[str, Any]:
    record: dict[str, Any] = dict(zip(header, row, strict=False))
    values = score_values(row)
    for task in (Task.SENTIMENT, Task.OFFENSIVE, Task.HATE, Task.QUESTION):
        record[f"label.{task.value}"] = values["labels"][task]
        for label in LABELS[task]:
            record[f"score.{task.value}.{label}"] = values["scores"][task][label]
    return record


def write_csv(path: Path, records: list[dict[str, Any]], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(records)
    return path


def write_export(path: Path, rows: list[tuple[Any, ...]] = ROWS) -> Path:
    """A scored export of ``rows`` in the format of ``path``'s extension."""
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        lines = []
        for row in rows:
            nested = score_values(row)
            record = {
                **dict(zip(HEADER, row, strict=False)),
                "labels": {t.value: v for t, v in nested["labels"].items()},
                "scores": {t.value: v for t, v in nested["scores"].items()},
            }
            lines.append(json.dumps(record) + "\n")
        data = "".join(lines).encode()
        path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
        return path
    records = [flat_record(row) for row in rows]
    if path.suffix == ".parquet":
        # As `commentdesk score` writes it: input columns as text, scores as floats.
        table = pa.Table.from_pylist(records)
        pq.write_table(table, path)
        return path
    return write_csv(path, records, "\t" if path.suffix == ".tsv" else ",")


@pytest.mark.parametrize("name", ["scored.csv", "scored.tsv", "scored.jsonl.gz", "scored.parquet"])
def test_exact_numbers_from_every_export_format(tmp_path: Path, name: str) -> None:
    report = build_report(load_export(write_export(tmp_path / name)))
    assert report.comments == 6 and report.skipped == {} and report.notes == []
    assert report.columns == {
        "time": "created_at",
        "source": "brand",
        "text": "text",
        "likes": "likes",
        "replied_at": "replied_at",
    }
    total = report.total
    assert (total.negative_share, total.neutral_share, total.positive_share) == (
        0.5,
        0.3333,
        0.1667,
    )
    assert (total.offensive_share, total.hate_share) == (0.1667, 0.1667)
    assert (total.questions, total.questions_answered) == (3, 2)
    # Row 4 is written at 09:00 UTC (+01:00) and row 5 in Unix seconds (2026-11-02 10:00 UTC).
    day1, day2 = report.daily
    assert (str(day1.day), day1.comments, day1.negative_share) == ("2026-11-01", 3, 1.0)
    assert (day1.offensive_share, day1.questions, day1.questions_answered) == (0.3333, 1, 1)
    assert (str(day2.day), day2.comments, day2.negative_share) == ("2026-11-02", 3, 0.0)
    assert (day2.neutral_share, day2.positive_share) == (0.6667, 0.3333)
    assert (day2.questions, day2.questions_answered) == (2, 1)
    # Replies after 30 min and 3 h: median 6,300 s, p90 1,800 + 0.9 x 9,000.
    assert report.reply_time.replies == 2
    assert report.reply_time.median_seconds == 6300.0
    assert report.reply_time.p90_seconds == pytest.approx(9900.0)
    assert {b.label: b.count for b in report.reply_time.buckets if b.count} == {
        "15-60 min": 1,
        "1-4 h": 1,
    }
    assert [(s.source, s.comments, s.negative_share, s.questions) for s in report.sources] == [
        ("acme", 4, 0.5, 2),
        ("beta", 2, 0.5, 1),
    ]
    negative = report.terms["negative"]
    assert (negative.comments, negative.counted) == (3, 3)
    words = {t.term: t.comments for t in negative.words}
    assert words == {
        "parcel": 2,
        "terrible": 2,
        "service": 2,
        "arrived": 1,
        "times": 1,
        "worse": 1,
    }
    phrases = {t.term: t.comments for t in negative.phrases}
    assert phrases == {"terrible service": 2, "times worse": 1}
    question_words = {t.term: t.comments for t in report.terms["question"].words}
    assert question_words == {
        "parcel": 2,
        "reset": 1,
        "password": 1,
        "change": 1,
        "address": 1,
    }
    assert [e.negative for e in report.most_negative[:3]] == [0.9, 0.8, 0.7]
    assert report.most_negative[0].text == "My parcel never arrived, terrible service"
    assert report.most_liked_by == "likes"
    assert [e.likes for e in report.most_liked] == [50, 5, 3, 2, 1, 0]


def test_filters_since_until_source(tmp_path: Path) -> None:
    comments = load_export(write_export(tmp_path / "scored.csv"))
    assert build_report(comments, make_filters(since="2026-11-02")).comments == 3
    # A date as until includes that day; a date-time is an exclusive end.
    assert build_report(comments, make_filters(until="2026-11-01")).comments == 3
    assert build_report(comments, make_filters(until="2026-11-01T11:00:00Z")).comments == 1
    beta = build_report(comments, make_filters(source="beta"))
    assert (beta.comments, beta.source, [s.source for s in beta.sources]) == (2, "beta", ["beta"])
    nobody = build_report(comments, make_filters(source="nobody"))
    assert (nobody.comments, nobody.daily, nobody.total.negative_share) == (0, [], None)
    with pytest.raises(FilterError, match=r"since .* must be before until") as error:
        make_filters(since="2026-11-02", until="2026-11-01")
    assert error.value.name == "until"
    with pytest.raises(FilterError, match="no date"):
        make_filters(since="last tuesday")


def test_without_likes_or_replies_says_so_and_shows_the_most_positive(tmp_path: Path) -> None:
    header = ["id", "time", "page", "drop_likes", "drop_replied", "message"]
    records = [flat_record(row, header) for row in ROWS]
    for record in records:
        del record["drop_likes"], record["drop_replied"]
    report = build_report(load_export(write_csv(tmp_path / "scored.csv", records)))
    assert report.columns["time"] == "time" and report.columns["source"] == "page"
    assert report.columns["likes"] is None and report.most_liked_by == "positive"
    assert report.most_liked[0].text == "Love the new app"
    assert report.total.questions_answered == 0 and report.reply_time.replies == 0
    assert any("No likes" in note for note in report.notes)
    assert any("No replied_at" in note for note in report.notes)


def test_column_overrides(tmp_path: Path) -> None:
    header = ["id", "written", "shop", "likes", "replied_at", "text"]
    records = [flat_record(row, header) for row in ROWS]
    path = write_csv(tmp_path / "scored.csv", records)
    with pytest.raises(ReportInputError, match=r"no time column found .*--time-column"):
        load_export(path)
    comments = load_export(path, time_column="written", source_column="shop")
    assert [s.source for s in build_report(comments).sources] == ["acme", "beta"]
    with pytest.raises(ReportInputError, match="no 'nope' column"):
        load_export(path, time_column="nope")


def test_hostile_values_are_counted_not_fatal(tmp_path: Path) -> None:
    records = [flat_record(row) for row in ROWS]
    records[0]["likes"] = "1e999"
    records[1]["likes"] = "-3"
    records[2]["score.sentiment.negative"] = "NaN"
    records[3]["label.sentiment"] = "<script>"
    records[4]["created_at"] = "9999-99-99"
    records[5]["replied_at"] = "soon"
    path = write_csv(tmp_path / "scored.csv", records)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("7,too,few,fields\n")
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(flat_record(ROWS[4]).values())
    with path.open("ab") as handle:  # a Latin-1 row: not UTF-8
        handle.write(line.getvalue().encode().replace(b"Love", b"L\xf6ve"))
    report = build_report(load_export(path))
    assert report.comments == 5
    assert report.skipped == {
        "unknown sentiment label": 1,
        "unreadable likes": 2,
        "unreadable replied_at": 1,
        "unreadable row": 2,
        "unreadable score": 1,
        "unreadable time": 1,
    }
    assert report.total.negative_share == 0.75  # of the 4 rows with a known sentiment


def test_reply_before_the_comment_is_answered_without_a_time(tmp_path: Path) -> None:
    records = [flat_record(row) for row in ROWS]
    records[1]["replied_at"] = "2026-10-31T00:00:00Z"
    report = build_report(load_export(write_csv(tmp_path / "scored.csv", records)))
    assert report.total.questions_answered == 2 and report.reply_time.replies == 1
    assert report.skipped == {"reply before the comment": 1}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "does not exist"),
        ("empty.csv", b"", "is empty"),
        ("header.csv", b"created_at,text,label.sentiment\n", "has no comments"),
        ("empty.jsonl", b"", "has no comments"),
        ("plain.csv", b"created_at,text\n2026-11-01,hello\n", "no label.<task> columns"),
        ("plain.jsonl", b'{"created_at": "2026-11-01", "text": "hi"}\n', "no 'labels' field"),
        ("utf16.csv", "created_at,label.sentiment\n".encode("utf-16"), "not valid UTF-8"),
        ("fake.csv.gz", b"created_at,text\n", "Not a gzipped file"),
        ("fake.jsonl.gz", b'{"labels": {}}\n', "cannot read it"),
        ("cut.csv.gz", gzip.compress(b"created_at,label.sentiment\n" + b"2026-11-01,negative\n" * 999)[:-6], "cannot read it"),
        ("broken.parquet", b"PAR1 not really", "not a readable Parquet file"),
        ("comments.xlsx", b"PK", "unknown file type"),
        ("times.csv", b"created_at,label.sentiment\nyesterday-ish,negative\n", "no row has a readable time"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ReportInputError, match=re.escape(message)):
        load_export(path)
    result = runner.invoke(app, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r.html").exists()


def test_times_in_every_common_shape() -> None:
    times = parse_times(
        [
            "2026-11-01T10:00:00Z",
            "2026-11-01T11:00:00+01:00",
            "2026-11-01 10:00:00",
            "Sun Nov 01 10:00:00 +0000 2026",  # Twitter's
            "1793527200",
            "1793527200000",
            1793527200,
            datetime(2026, 11, 1, 10, tzinfo=UTC),
            "x" * 1000,
            None,
            "",
        ]
    )
    expected = datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert [t.to_pydatetime() for t in times[:8]] == [expected] * 8
    assert times[8:].isna().all()


def test_terms_drop_stop_words_urls_handles_numbers_and_count_once_per_comment() -> None:
    words, phrases = count_terms(
        [
            "@AmazonHelp refund refund REFUND!!! http://t.co/abc www.example.com 42 me@x.org",
            "Still no refund... I can't believe it &amp; #fail",
        ]
    )
    assert dict(words) == {"refund": 2, "believe": 1, "fail": 1}
    assert dict(phrases) == {"refund refund": 1}


def _db_rows(api: Api) -> None:
    """Comments with known labels written straight to the database, and reply decisions."""
    with api.app.state.sessions() as session:
        comments = []
        for row in ROWS:
            values = score_values(row)
            received = datetime(2026, 11, 3, tzinfo=UTC)
            comments.append(
                Comment(
                    source=row[2],
                    external_id=row[0],
                    text=row[5],
                    # Comment 6 has no created_at: its time is when it was received.
                    created_at=None if row[0] == "6" else parse_times([row[1]])[0].to_pydatetime(),
                    received_at=received,
                    model_name="m",
                    model_version="1",
                    labels={t.value: v for t, v in values["labels"].items()},
                    scores={t.value: v for t, v in values["scores"].items()},
                )
            )
        session.add_all(comments)
        session.flush()
        for comment, replied in ((comments[1], "2026-11-01T11:30:00Z"), (comments[3], None)):
            # Comment 4: an approval first, its reply 3 h after it was written.
            times = [("approve", "2026-11-02T09:30:00Z"), ("reply", "2026-11-02T12:00:00Z")]
            for action, when in [("reply", replied)] if replied else times:
                session.add(
                    Decision(
                        comment_id=comment.id,
                        key_id=1,
                        actor="mod",
                        action=action,
                        model_name="m",
                        model_version="1",
                        scores={},
                        created_at=parse_times([when])[0].to_pydatetime(),
                    )
                )
        session.commit()


def test_database_report_and_stats_agree(api: Api) -> None:
    _db_rows(api)
    response = api.client.get("/v1/stats", headers=api.auth(Role.VIEWER))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decisions"] == {"approve": 1, "reply": 2}  # the earlier fields stay
    report = body["report"]
    with api.app.state.sessions() as session:
        expected = build_report(load_database(session, make_filters()))
    assert report == expected.model_dump(mode="json")
    assert report["input"] == "database" and report["comments"] == 6
    assert [d["day"] for d in report["daily"]] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert report["total"]["questions"] == 3 and report["total"]["questions_answered"] == 2
    assert report["reply_time"]["median_seconds"] == 6300.0
    assert report["most_liked_by"] == "positive"
    assert [s["source"] for s in report["sources"]] == ["acme", "beta"]

    filtered = api.client.get(
        "/v1/stats",
        params={"since": "2026-11-02", "until": "2026-11-02", "source": "acme"},
        headers=api.auth(Role.VIEWER),
    ).json()["report"]
    assert filtered["comments"] == 1 and filtered["source"] == "acme"
    assert filtered["since"] == "2026-11-02T00:00:00Z"
    assert filtered["until"] == "2026-11-03T00:00:00Z"
    assert filtered["most_liked"][0]["text"] == "Love the new app"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-11-02", "until": "2026-11-01"}, "until"),
        ({"source": "a\x00b"}, "source"),
        ({"source": "x" * 101}, "source"),
    ],
)
def test_stats_rejects_bad_filters(api: Api, params: dict[str, str], field: str) -> None:
    response = api.client.get("/v1/stats", params=params, headers=api.auth(Role.VIEWER))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_cli_report_from_the_database(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    _db_rows(api)
    url = str(api.app.state.settings.database_url())
    monkeypatch.setenv("COMMENTDESK_DATABASE__URL", url)
    output = Path(api.app.state.settings.state_dir) / "db-report.html"
    result = runner.invoke(app, ["report", "database", "-o", str(output), "--source", "beta"])
    assert result.exit_code == 0, result.output
    assert "2 comments over 2 days" in result.output
    assert "Most positive comments (no likes in the input)" in output.read_text(encoding="utf-8")


URL_ATTRIBUTES = {"src", "href", "srcset", "action", "poster", "data", "background"}


class Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Analytics report\n\n```bash\n(.*?)```", readme, re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMMENTDESK_DATABASE__URL", f"sqlite:///{tmp_path / 'empty.db'}")
    write_export(tmp_path / "scored.csv")
    outputs = []
    for line in block.group(1).splitlines():
        command = shlex.split(line.split("#")[0])
        assert command[:2] == [".venv/bin/commentdesk", "report"]
        result = runner.invoke(app, command[1:])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert outputs[0].startswith("wrote report.html (6 comments over 2 days")
    assert outputs[1].startswith("wrote report.html (0 comments over 0 days")


def hostile_export(tmp_path: Path) -> Path:
    rows = [*ROWS, ("7", "2026-11-02T12:00:00Z", "<b>brand</b>", "99", "", HOSTILE,
                    "negative", 0.99, "offensive", "not-hate", "not-question")]  # fmt: skip
    return write_export(tmp_path / "scored.csv", rows)


def test_html_is_self_contained_and_escapes_hostile_text(tmp_path: Path) -> None:
    output = tmp_path / "out" / "report.html"
    result = runner.invoke(app, ["report", str(hostile_export(tmp_path)), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "7 comments over 2 days" in result.output
    page = output.read_text(encoding="utf-8")
    pngs = sorted(files_dir(output).glob("*.png"))
    assert [p.stem for p in pngs] == [
        "offensive_hate",
        "questions",
        "reply_time",
        "sources",
        "terms",
        "volume_sentiment",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert page.count('src="data:image/png;base64,') == 6
    # Nothing to fetch: the only tags with a URL are images of data URIs; no script, link,
    # frame, font or import (the comments' own URLs are text).
    tags = Tags()
    tags.feed(page)
    assert {tag for tag, _ in tags.found} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "div", "b", "ul",
        "li", "figure", "img", "table", "tr", "th", "td",
    }  # fmt: skip
    urls = [value for _, attrs in tags.found for name, value in attrs if name in URL_ATTRIBUTES]
    assert len(urls) == 6 and all((url or "").startswith("data:image/png;base64,") for url in urls)
    style = page[page.index("<style>") : page.index("</style>")]
    assert not re.search(r"url\(|@import|@font-face|//", style)
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in page
    assert "&lt;b&gt;brand&lt;/b&gt;" in page and "<b>brand" not in page
    assert "default-src 'none'" in page


def test_write_report_of_nothing(tmp_path: Path) -> None:
    comments = load_export(write_export(tmp_path / "scored.csv"))
    report = build_report(comments, make_filters(source="nobody"))
    written = write_report(report, tmp_path / "empty.html")
    assert len(written) == 6 and "No comments." in (tmp_path / "empty.html").read_text()


@pytest.mark.browser
def test_report_renders_in_chromium(browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    output = tmp_path / "report.html"
    write_report(build_report(load_export(hostile_export(tmp_path))), output)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    page.goto(output.as_uri(), wait_until="load")
    images = page.locator("img").evaluate_all(
        "images => images.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert len(images) == 6 and all(done and w > 0 and h > 0 for done, w, h in images)
    assert page.locator("h1").inner_text() == "commentdesk report"
    headings = page.locator("h2").all_inner_texts()
    assert headings[0] == "Comments and sentiment per day" and "Most-liked comments" in headings
    assert HOSTILE in page.locator("td.text").all_inner_texts()
    assert page.evaluate("window.__xss") is None and errors == []
    screenshot = page.screenshot(full_page=True)
    assert screenshot.startswith(b"\x89PNG") and len(screenshot) > 50_000
    context.close()
