//! LLMPU runtime.
