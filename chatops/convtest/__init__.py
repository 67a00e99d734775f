"""``chatops test``: scripted conversation tests, run through the same code as ``chatops simulate``.

::

    test files (YAML) ─▶ loader (checked against the bot: file:line:col, did-you-mean) ─▶ cases
    cases ─▶ runner (one Simulator per channel: real webhook route, signature, parser, worker, engine;
             a thread per case, each its own user and clock) ─▶ expectations / graded ─▶ reports
    reports ─▶ update (rewrite exact replies) · junit · github annotations

Modules: ``cases`` (the data), ``loader``, ``isolation``, ``outcome``, ``expectations``, ``graded``, ``runner``,
``update``, ``reports``. docs/testing.md is the user's guide.
"""

from __future__ import annotations

from chatops.convtest.cases import Case, Expectation, Step, TestFile
from chatops.convtest.graded import Grader
from chatops.convtest.loader import TestFileError, find_test_files, load_test_files
from chatops.convtest.runner import CaseReport, Failure, RunReport, StepReport, run_cases

__all__ = [
    "Case",
    "CaseReport",
    "Expectation",
    "Failure",
    "Grader",
    "RunReport",
    "Step",
    "StepReport",
    "TestFile",
    "TestFileError",
    "find_test_files",
    "load_test_files",
    "run_cases",
]
