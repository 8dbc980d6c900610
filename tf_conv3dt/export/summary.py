"""The report as the export command prints it: a table of the artifacts, then what each format adds."""

from tf_conv3dt.export import formats


def format_report(report):
    """``report`` (report.json's dict) as a fixed-width table, then each
    registered format's notes on its rows and its longer details (the
    serving request examples)."""
    lines = [f"{'artifact':<22} {'size KiB':>9} {'max abs err':>12} {'rel err':>9} "
             f"{'tol':>6} {'ok':>3} {'latency ms':>11}  runtime"]
    for row in report["artifacts"]:
        error = row.get("error") or {}
        lines.append(
            f"{row['artifact']:<22} {row['size_bytes'] / 1024:9.1f} "
            f"{_fmt(error.get('max_abs'), '.2e'):>12} {_fmt(error.get('relative'), '.2e'):>9} "
            f"{_fmt(error.get('tolerance'), 'g'):>6} "
            f"{_within(row):>3} "
            f"{_fmt(row.get('latency_ms'), '.3f'):>11}  {row.get('latency_runtime') or ''}")
    for format_ in formats.every():
        lines += format_.notes(report)
    for format_ in formats.every():
        lines += format_.details(report)
    lines.append("all artifacts within tolerance" if report["all_within_tolerance"]
                 else "SOME ARTIFACTS EXCEED THEIR TOLERANCE: nothing was published")
    return "\n".join(lines)


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def _within(row):
    """A report row's "ok" column: yes, NO, or blank where nothing was judged."""
    if "within_tolerance" not in row:
        return ""
    return "yes" if row["within_tolerance"] else "NO"
