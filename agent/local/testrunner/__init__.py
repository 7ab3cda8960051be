"""parigot's test runner (``test.v1.Test``): register suites, queue the selected tests, run them on
the suite's ``test.v1.UnderTest`` server and deliver ``MethodCallSuite.SuiteReport``."""
