"""glama-deploy test suite."""
