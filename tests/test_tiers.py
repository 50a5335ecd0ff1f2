"""The test tiers (tests/tiers.py): the whole suite collects with every test in exactly one tier, and a test with
no tier, two tiers, or a model under the unit tier is refused by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).parent


def collect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
    )


def count(output: str) -> int:
    return sum(1 for line in output.splitlines() if "::" in line)


def test_every_test_of_the_suite_sits_in_exactly_one_tier() -> None:
    """The hook refuses the collection otherwise (a usage error, exit code 4), so a clean collection is the proof."""
    everything = collect()
    assert everything.returncode == 0, everything.stdout[-3000:] + everything.stderr[-3000:]
    assert count(everything.stdout) > 1000  # the whole suite, not an early error


def with_tiers(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\npytest_plugins = ['tiers']\n"
        "import pytest\n@pytest.fixture\ndef default_model(): return None\n"
    )


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("def test_a(): pass", "no tier"),
        (
            "import pytest\n@pytest.mark.unit\n@pytest.mark.slow\ndef test_a(): pass",
            "tiers slow, unit on test_x.py::test_a",
        ),
        ("import pytest\n@pytest.mark.unit\ndef test_a(default_model): pass", "marked unit but loads a model"),
    ],
)
def test_a_test_outside_one_tier_is_refused_by_name(pytester: pytest.Pytester, source: str, problem: str) -> None:
    with_tiers(pytester)
    pytester.makepyfile(test_x=source)
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"test_x.py::test_a: {problem}" in result.stderr.str()


def test_a_tests_own_tier_overrides_its_modules_and_selects_it_alone(pytester: pytest.Pytester) -> None:
    with_tiers(pytester)
    pytester.makepyfile(
        test_x="import pytest\npytestmark = pytest.mark.model\n"
        "def test_quick(): pass\n@pytest.mark.slow\ndef test_long(): pass\n"
    )
    for tier, expected in {"model": "test_quick", "slow": "test_long"}.items():
        result = pytester.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider", "-m", tier)
        assert result.ret == pytest.ExitCode.OK
        assert [line for line in result.outlines if "::" in line] == [f"test_x.py::{expected}"]
