"""The pytest plugin: a failing test that holds a failing check's report shows its table.

Registered as the ``pytest11`` entry point ``functional_nn``, so pytest loads it wherever
``functional_nn`` is installed (``-p no:functional_nn`` turns it off). It is a module of its
own beside the package, not inside it: importing anything in ``functional_nn`` runs the
package's ``__init__`` (jax and the whole library, 1.5 s), and ``functional_nn.testing`` needs
Hypothesis, which a plain install lacks, so a plugin there would slow or break every pytest
run in the environment. Loading this one imports nothing but ``sys`` and ``pytest``
(tests/testing/test_plugin.py checks it): the hook below runs only for a failed test, and
only looks for reports when ``functional_nn.checking`` has been imported by then.

Where the report comes from: the failing test's frames, and the frames it called, hold it in
a local variable (``report = fnn.check_grad(...)``), or in the temporaries of pytest's
rewritten assertion (``assert fnn.check_grad(f, p).ok``), or in the frame that raised
:class:`~functional_nn.GradientMismatch` (``report.raise_if_failed()``). Each failing
report found is printed once, as its ``str()``, in a section "functional_nn: failing check"
of the test's report.
"""

from __future__ import annotations

import sys

import pytest

SECTION = "functional_nn: failing check"


def _failing_reports(tb) -> list:
    checking = sys.modules.get("functional_nn.checking")
    if checking is None:
        return []
    kinds = (checking.GradCheckReport, checking.LocateReport)
    found, seen = [], set()
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, kinds) and id(value) not in seen and not value.ok:
                seen.add(id(value))
                found.append(value)
        tb = tb.tb_next
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is None or not report.failed:
        return
    for i, check in enumerate(_failing_reports(call.excinfo.tb)):
        title = SECTION if i == 0 else f"{SECTION} ({i + 1})"
        report.sections.append((title, str(check)))
