//! LLMPU compiler.
