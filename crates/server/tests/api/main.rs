//! In-process tests of the HTTP API (no sockets except the fake upstream
//! LLM of the chat tests, on 127.0.0.1:0).

mod aliases;
mod bad_input;
mod batching;
mod chat;
mod common;
mod endpoints;
mod fuzz;
mod learning;
mod limits;
mod minilm;
