"""Reports for CI: JUnit XML (one testcase per case) and GitHub Actions annotations at the test file's line."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from chatops.convtest.runner import CaseReport, RunReport


def failure_lines(case: CaseReport) -> list[tuple[str, str]]:
    """``(location, message)`` for each problem of a failed case: the failing expectations, or the case error."""
    if case.error is not None:
        return [(str(case.case.where), case.error)]
    lines = []
    for step in case.steps:
        for failure in step.failures:
            lines.append(
                (str(failure.expectation.where), f"step {step.step.number} ({step.step.describe()}): {failure.message}")
            )
    return lines


def write_junit(report: RunReport, path: Path) -> None:
    """Write JUnit XML: a testsuite per file, a testcase per case with its failure (or error) and location."""
    suites = ET.Element("testsuites", tests=str(len(report.cases)), failures=str(len(report.failed)))
    suites.set("time", f"{report.seconds:.3f}")
    by_file: dict[str, list[CaseReport]] = {}
    for case in report.cases:
        by_file.setdefault(case.case.file.display, []).append(case)
    for display, cases in by_file.items():
        failed = [case for case in cases if case.error is None and not case.passed]
        errors = [case for case in cases if case.error is not None]
        suite = ET.SubElement(
            suites, "testsuite", name=display, tests=str(len(cases)), failures=str(len(failed)), errors=str(len(errors))
        )
        suite.set("time", f"{sum(case.seconds for case in cases):.3f}")
        for case in cases:
            element = ET.SubElement(suite, "testcase", classname=display, name=case.case.name)
            element.set("time", f"{case.seconds:.3f}")
            element.set("file", display)
            element.set("line", str(case.case.where.line))
            if case.passed:
                continue
            lines = failure_lines(case)
            tag = "error" if case.error is not None else "failure"
            child = ET.SubElement(element, tag, message=lines[0][1] if lines else "failed")
            child.text = "\n".join(f"{where}: {message}" for where, message in lines)
    ET.indent(suites)
    path.write_text(ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n", encoding="utf-8")


def github_annotations(report: RunReport) -> list[str]:
    """``::error file=…,line=…,col=…,title=…::message`` for every failure (newlines escaped as GitHub wants)."""
    lines = []
    for case in report.failed:
        for where, message in failure_lines(case):
            file, line, col = str(where).rsplit(":", 2)
            title = _escape(case.case.name, prop=True)
            lines.append(
                f"::error file={_escape(file, prop=True)},line={line},col={col},title={title}::{_escape(message)}"
            )
    return lines


def _escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text
