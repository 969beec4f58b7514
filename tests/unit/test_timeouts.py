"""Every test has a timeout: a hung test fails, it never eats the CI budget."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_a_hung_test_fails_on_its_timeout(pytester):
    pytester.makepyfile(
        """
        import time

        import pytest

        @pytest.mark.timeout(1)
        def test_hangs():
            time.sleep(30)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "Timeout" in result.stdout.str()


def test_the_suite_has_a_default_and_slow_tests_a_longer_one(request):
    assert request.config.getini("timeout") == "300"
    slow = [item for item in request.session.items if item.get_closest_marker("slow")]
    for item in slow[:5]:
        assert item.get_closest_marker("timeout").args[0] >= 900
