import pytest

# the contract and its helpers assert too: show their diffs as test modules do (here, not
# in a conftest, because tests elsewhere import the helpers before this directory's
# conftest would load)
pytest.register_assert_rewrite("tests.store.contract", "tests.store.support")
