"""The drive error code table (CiA 301 / CiA 402) that names a drive's fault on gRPC and MQTT."""
from common.drive_errors import drive_error_text


def test_exact_codes_read_as_the_standard_names_them():
    assert drive_error_text(0x7500) == "0x7500 communication error"
    assert drive_error_text(0x8611) == "0x8611 following error"
    assert drive_error_text(0x2310) == "0x2310 continuous over-current"


def test_codes_outside_the_table_fall_back_to_their_group_and_keep_the_number():
    assert drive_error_text(0x4311) == "0x4311 temperature"
    assert drive_error_text(0xFF42) == "0xFF42 manufacturer specific"
    assert drive_error_text(0xA123) == "0xA123 unknown error code"
    assert drive_error_text(0x1_7500) == "0x7500 communication error"  # only the 16-bit code counts
