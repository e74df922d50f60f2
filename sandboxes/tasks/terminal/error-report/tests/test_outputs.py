from pathlib import Path

REPORT = Path("/app/report.txt")


def test_report_exists():
    assert REPORT.is_file(), "/app/report.txt was not written"


def test_report_counts():
    lines = REPORT.read_text().split("\n")
    lines = [line.strip() for line in lines if line.strip()]
    assert lines == ["api.log 3", "cron.log 0", "worker.log 2"]
