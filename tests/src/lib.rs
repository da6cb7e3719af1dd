//! The end-to-end harness: throw-away network namespaces wired like pods.
