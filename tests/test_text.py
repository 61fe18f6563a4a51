import pytest

from model.tasks import LABELS, Task, parse_task
from model.text import dedup_key, normalize


def test_normalize_uses_tweeteval_placeholders() -> None:
    assert normalize("@AmazonHelp see https://t.co/abc now") == "@user see http now"


def test_normalize_decodes_escapes_entities_and_width() -> None:
    assert normalize("it\\u2019s &amp; ok") == "it’s & ok"
    assert normalize("ｆｕｌｌ　ｗｉｄｔｈ") == "full width"


def test_normalize_removes_invisible_characters_but_keeps_emoji_and_rtl() -> None:
    assert normalize("bad\u200bword \u202eok") == "badword ok"
    assert normalize("شكرا 😀") == "شكرا 😀"


def test_normalize_keeps_email_addresses() -> None:
    assert normalize("write to me@example.com") == "write to me@example.com"


def test_dedup_key_matches_differently_formatted_copies() -> None:
    a = 'RT @user1: "Dark Souls 3" launch date... http://t.co/x'
    b = "Dark Souls 3 launch date @someone https://t.co/y"
    assert dedup_key(a) == dedup_key(b)
    assert dedup_key("Dark Souls 3 launch") != dedup_key(b)


def test_dedup_key_of_links_only_is_empty() -> None:
    assert dedup_key("@user http://x.y") == ""


def test_every_task_has_fixed_labels() -> None:
    assert LABELS[Task.SENTIMENT] == ("negative", "neutral", "positive")
    assert LABELS[Task.IRONY] == ("non-irony", "irony")
    assert {t.value for t in Task} == {
        "sentiment",
        "offensive",
        "hate",
        "question",
        "emotion",
        "irony",
    }


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known tasks: sentiment"):
        parse_task("toxicity")


def test_an_unpaired_surrogate_becomes_the_replacement_character() -> None:
    assert normalize("cut \ud83d emoji \udc00") == "cut \ufffd emoji \ufffd"
    assert normalize("whole \U0001f600") == "whole \U0001f600"
