"""Log lines a caller cannot forge (issue 16): control characters escaped, long messages capped,
tracebacks untouched."""
import logging

from common.logsafe import MAX_MESSAGE, SafeMessages, safe_text


def test_control_characters_are_escaped_on_one_line():
    assert safe_text("a\nb\r\x00\x1b[31m\u2028") == "a\\nb\\r\\x00\\x1b[31m\\u2028"
    assert safe_text("tab\tstays") == "tab\tstays"


def test_long_messages_are_capped_with_what_was_left_out():
    out = safe_text("y" * (MAX_MESSAGE + 500))
    assert out.startswith("y" * MAX_MESSAGE) and out.endswith("… (500 more characters)")


def test_the_filter_merges_arguments_and_keeps_exc_info():
    rec = logging.LogRecord("t", logging.WARNING, __file__, 1, "recipe %s: %d", ("x\ny", 3), None)
    assert SafeMessages().filter(rec)
    assert rec.getMessage() == "recipe x\\ny: 3"
    assert SafeMessages().filter(rec) and rec.getMessage() == "recipe x\\ny: 3"  # idempotent (two handlers)
