"""SwiftDiffusion test suite."""
