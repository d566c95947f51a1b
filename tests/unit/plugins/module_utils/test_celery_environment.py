"""The EnvironmentFile parser follows systemd's rules; secrets are found and masked."""

from __future__ import annotations

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils.celery_environment import (
    DEFAULT_PATH,
    EnvironmentFileError,
    helper_process_environment,
    parse_environment_file,
    read_environment_file,
    redact,
    secret_values,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=two words\n", {"A": "1", "B": "two words"}),
        ("A=1", {"A": "1"}),  # no newline at the end of the file
        ("A=\n", {"A": ""}),
        ("  A = spaced  \t\n", {"A": "spaced"}),  # outer whitespace goes, of key and value
        ("A=in  side\n", {"A": "in  side"}),  # interior whitespace stays
        ("# comment\n; other comment\n\nA=1\n", {"A": "1"}),
        ("A=1 # not a comment\n", {"A": "1 # not a comment"}),
        ("no assignment here\nA=1\n", {"A": "1"}),
        ("A=1\nA=2\n", {"A": "2"}),  # the later one wins
        ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ],
)
def test_plain_assignments_comments_and_whitespace(text, expected):
    assert parse_environment_file(text) == expected


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (r"A='single $HOME \n \\ kept'", r"single $HOME \n \\ kept"),
        ('A="double \\" \\\\ \\$ \\` escaped"', 'double " \\ $ ` escaped'),
        (r'A="other \n escape keeps its backslash"', r"other \n escape keeps its backslash"),
        ("A='a'\"b\"", "ab"),  # quoted pieces at the start of a value join
        ("A='a' 'b'", "ab"),
        ("A=foo'bar'", "foo'bar'"),  # quotes after the first character are plain text
        (r"A=a\ b\\c\#d", "a b\\c#d"),  # unquoted backslash keeps the next character
        ("A=   'padded'   ", "padded"),
        ("A='p#ss;w=rd'", "p#ss;w=rd"),
    ],
)
def test_quotes_and_backslashes_follow_systemd(line, value):
    assert parse_environment_file(line + "\n") == {"A": value}


def test_backslash_newline_continues_an_unquoted_value():
    assert parse_environment_file("A=one \\\ntwo\nB=3\n") == {"A": "one two", "B": "3"}


def test_quoted_value_spans_lines():
    assert parse_environment_file("A='line1\nline2'\nB=\"x\\\ny\"\n") == {
        "A": "line1\nline2",
        "B": "xy",
    }


def test_line_after_a_comment_ending_in_backslash_is_not_a_comment():
    # systemd >= 254: a trailing backslash does not continue a comment.
    assert parse_environment_file("# comment \\\nA=1\n") == {"A": "1"}


def test_export_is_refused_with_the_line_and_name_but_not_the_value():
    with pytest.raises(EnvironmentFileError) as raised:
        parse_environment_file("A=1\nexport CELERY_BROKER_URL=redis://u:hunter2@h/0\n")
    message = str(raised.value)
    assert "line 2" in message and "CELERY_BROKER_URL" in message and "export" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("line", ["1A=x", "A-B=x", "A B=x"])
def test_name_systemd_would_ignore_is_refused(line):
    with pytest.raises(EnvironmentFileError, match="not a valid variable name"):
        parse_environment_file(line + "\n")


def test_file_is_read_as_utf8(tmp_path):
    path = tmp_path / "app.env"
    path.write_text("GREETING='héllo'\n", encoding="utf-8")
    assert read_environment_file(str(path)) == {"GREETING": "héllo"}


def test_url_passwords_raw_and_decoded_and_secret_named_values_are_secrets():
    env = {
        "CELERY_BROKER_URL": "rediss://celery:p%40ss%23word@redis.example:6380/0",
        "CELERY_RESULT_BACKEND": "redis://:other@127.0.0.1/1",
        "DJANGO_SECRET_KEY": "django-key",
        "DJANGO_SETTINGS_MODULE": "proj.settings",
        "PLAIN_URL": "redis://127.0.0.1:6379/0",
    }
    secrets = secret_values(env)
    assert set(secrets) == {"p%40ss%23word", "p@ss#word", "other", "django-key"}


def test_sentinel_url_list_passwords_are_found():
    env = {"CELERY_BROKER_URL": "sentinel://:pw1@h1:26379;sentinel://:pw2@h2:26379"}
    assert set(secret_values(env)) == {"pw1", "pw2"}


def test_redact_masks_longest_secret_first():
    text = "error connecting with secret-long and secret"
    assert redact(text, secret_values({"A_PASSWORD": "secret", "B_TOKEN": "secret-long"})) == (
        "error connecting with ******** and ********"
    )


def test_helper_environment_is_the_units_not_the_callers(monkeypatch):
    monkeypatch.setenv("ANSIBLE_ONLY_VARIABLE", "leak")
    env = helper_process_environment("/srv/app", {"CELERY_BROKER_URL": "redis://x", "PYTHONPATH": "/extra"},
                                     {"EXTRA": 1}, home="/var/lib/celery")
    assert "ANSIBLE_ONLY_VARIABLE" not in env
    assert env["PATH"] == DEFAULT_PATH
    assert env["PYTHONPATH"] == "/srv/app:/extra"
    assert env["CELERY_BROKER_URL"] == "redis://x"
    assert env["EXTRA"] == "1"
    assert env["HOME"] == "/var/lib/celery"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
