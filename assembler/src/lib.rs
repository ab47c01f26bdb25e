//! LLMPU assembler.
