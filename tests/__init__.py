"""The test suite: fixtures in conftest.py, what modules share besides in helpers.py."""

import pytest

# The helpers assert on what the server answered: their failures say why, as the tests' own asserts do.
pytest.register_assert_rewrite("tests.helpers")
