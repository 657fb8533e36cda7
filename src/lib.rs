//! Workspace root: integration tests and benchmarks live in tests/ and benches/.
