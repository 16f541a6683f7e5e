"""T2IWorkflow CRD and operator: pure rendering tests and cluster tests on the test bed."""
