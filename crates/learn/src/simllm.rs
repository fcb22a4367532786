//! Simulated LLM (in progress).
